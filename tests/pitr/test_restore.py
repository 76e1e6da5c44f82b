"""Restore to a point in time: base backup + archived WAL into a throwaway server, recovered
to the moment, then copied into a NEW database (or a whole data folder that starts)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

from tests.pitr.conftest import AS_ROOT, PitrSite
from tests.servers import _pg_bin_dir, free_port


def _rows(site: PitrSite, db: str) -> list[str]:
    out = site.sql("SELECT note FROM events ORDER BY id", db)
    return out.splitlines() if out else []


def _moment(site: PitrSite) -> datetime:
    """The server's clock now (commit timestamps are the server's)."""
    text = site.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.US')")  # fmt: skip
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _insert(site: PitrSite, notes: list[str]) -> None:
    for note in notes:  # one transaction (one commit timestamp) per row
        site.sql(f"INSERT INTO events (note) VALUES ('{note}')")


def test_restore_to_a_time_has_exactly_the_rows_committed_before_it(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL, "
             "at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip
    _insert(site, ["before-base-1", "before-base-2"])
    site.ok("pitr", "basebackup")
    _insert(site, [f"a{i}" for i in range(5)])
    time.sleep(1.0)
    target = _moment(site)
    time.sleep(1.0)
    _insert(site, [f"b{i}" for i in range(5)])
    site.sql("DROP TABLE events")  # the mistake
    site.switch_and_wait()

    at = target.isoformat(sep=" ")
    into = site.server.url("shop_restored")
    plan = json.loads(
        site.ok("restore", "latest", "--source", "db", "--at", at, "--into", into,
                "--dry-run", "--json")
    )  # fmt: skip
    assert plan["dry_run"] is True and plan["into_kind"] == "database"
    assert plan["wal"]["files"] >= 1 and plan["estimated_seconds"] >= 1
    assert plan["databases"] == [{"from": "shop", "into": "shop_restored"}]
    assert site.server.password not in json.dumps(plan)
    listed = site.sql("SELECT datname FROM pg_database WHERE datname = 'shop_restored'",
                      "postgres")  # fmt: skip
    assert listed == "", "a dry run creates nothing"

    text = site.ok("restore", "latest", "--source", "db", "--at", at, "--into", into,
                   timeout=600)  # fmt: skip
    assert "restored db to the moment" in text
    assert _rows(site, "shop_restored") == [
        "before-base-1",
        "before-base-2",
        *[f"a{i}" for i in range(5)],
    ]
    # the restored rows are exactly those committed at or before the target
    newest = site.sql("SELECT max(at) <= timestamptz '" + at + "' FROM events", "shop_restored")
    assert newest == "t"

    # into an existing database with tables: refused; into the source's own database: refused
    again = site.cli("restore", "latest", "--source", "db", "--at", at, "--into", into)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    live = site.cli("restore", "latest", "--source", "db", "--at", at, "--into",
                    site.server.url("shop"))  # fmt: skip
    assert live.returncode == 1 and "live database" in live.stderr


def test_out_of_window_is_an_error_naming_the_window(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE events (id serial PRIMARY KEY, note text)")
    into = site.server.url("shop_old")
    nothing = site.cli("restore", "latest", "--source", "db", "--at", "-1m", "--into", into)
    assert nothing.returncode != 0 and "nothing is recoverable yet" in nothing.stderr
    site.ok("pitr", "basebackup")
    _insert(site, ["x"])
    site.switch_and_wait()
    before = (datetime.now(UTC) - timedelta(days=2)).isoformat(sep=" ", timespec="seconds")
    early = site.cli("restore", "latest", "--source", "db", "--at", before, "--into", into)
    assert early.returncode != 0, early.stdout
    assert "outside the recoverable window" in early.stderr
    assert "base backup shop-prod-" in early.stderr and " .. " in early.stderr
    assert "Traceback" not in early.stderr
    bad = site.cli("restore", "latest", "--source", "db", "--at", "yesterday-ish", "--into", into)
    assert bad.returncode == 1 and "is not a moment" in bad.stderr


def test_restore_into_a_datadir_starts_on_a_second_server(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL)")
    _insert(site, ["one"])
    site.ok("pitr", "basebackup")
    _insert(site, ["two"])
    lsn = site.sql("SELECT pg_current_wal_insert_lsn()", "postgres")
    _insert(site, ["three"])
    site.switch_and_wait()
    datadir = site.app / "restored"
    site.ok("restore", "latest", "--source", "db", "--before-lsn", lsn, "--into", str(datadir),
            timeout=600)  # fmt: skip
    assert (datadir / "recovery.signal").exists() and (datadir / "PG_VERSION").exists()
    bin_dir = _pg_bin_dir()
    assert bin_dir is not None
    port = free_port()
    log = site.root / "restored.log"
    socket_dir = site.app / "sock2"
    socket_dir.mkdir()
    denied = site.cli("restore", "latest", "--source", "db", "--before-lsn", lsn, "--into",
                      str(site.plan / "data"))  # fmt: skip
    assert denied.returncode == 1 and "cannot create the data folder" in denied.stderr
    if AS_ROOT:
        subprocess.run(["chown", "-R", "postgres:postgres", str(socket_dir)], check=True)
    argv = [str(bin_dir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "120",
            "-o", f"-p {port} -k {socket_dir} -c listen_addresses=''", "start"]  # fmt: skip
    if AS_ROOT:
        subprocess.run(["touch", str(log)], check=True)
        subprocess.run(["chown", "postgres:postgres", str(log)], check=True)
        argv = ["runuser", "-u", "postgres", "--", *argv]
    started = subprocess.run(argv, cwd="/", capture_output=True, text=True, check=False)
    try:
        assert started.returncode == 0, started.stderr + log.read_text()[-3000:]
        psql = [str(bin_dir / "psql"), "-X", "-At", "-h", str(socket_dir), "-p", str(port),
                "-U", "postgres", "-d", "shop", "-c"]  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # it recovers, then promotes
            probe = subprocess.run([*psql, "SELECT pg_is_in_recovery()"], capture_output=True,
                                   text=True, check=False, cwd="/")  # fmt: skip
            if probe.stdout.strip() == "f":
                break
            time.sleep(0.2)
        query = [*psql, "SELECT note FROM events ORDER BY id"]
        rows = subprocess.run(query, capture_output=True, text=True, check=True, cwd="/").stdout
        assert rows.split() == ["one", "two"]
    finally:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"]
        if AS_ROOT:
            stop = ["runuser", "-u", "postgres", "--", *stop]
        subprocess.run(stop, cwd="/", capture_output=True, check=False)
