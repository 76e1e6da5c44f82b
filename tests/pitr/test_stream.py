"""`safehold wal-stream`: pg_receivewal with a replication slot into the spool, the pusher into
the repository. Killed with -9 at random moments it loses no segment; a streamed archive
restores to a time; SIGTERM stops it cleanly; a missing replication right is one clear line."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from safehold.pitr.store import WalArchive
from tests.conftest import TEST_PASSWORD
from tests.pitr.conftest import AS_ROOT, PitrSite, open_repo, server_python


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it is gone
        return b""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Streamer:
    """`safehold wal-stream` in the background, as the account PostgreSQL runs as."""

    def __init__(self, site: PitrSite, *extra: str) -> None:
        self.site = site
        python, pythonpath = server_python()
        argv = ["env", f"PYTHONPATH={pythonpath}", python, "-m", "safehold", "--plan",
                str(site.plan), "wal-stream", *extra]  # fmt: skip
        if AS_ROOT:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self.log = site.root / f"stream-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(argv, env=site.env, cwd="/", stdout=out,
                                            stderr=subprocess.STDOUT)  # fmt: skip
        self.pid = self._python_pid()
        self.receiver = self._receiver_pid()

    def _python_pid(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if AS_ROOT:
                kids = _children(self.process.pid)
                kids = [k for kid in kids for k in [kid, *_children(kid)]]
                lines = {k: _cmdline(k) for k in kids}
                pythons = [k for k, line in lines.items()
                           if b"safehold" in line and b"runuser" not in line]  # fmt: skip
                if pythons:
                    return pythons[-1]
            else:
                return self.process.pid
            assert self.process.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError("the streamer did not start: " + self.output())

    def _receiver_pid(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for kid in _children(self.pid):
                if b"pg_receivewal" in _cmdline(kid):
                    return kid
            assert self.process.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError("pg_receivewal did not start: " + self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(self.receiver):  # the parent-death signal takes pg_receivewal along
            assert time.monotonic() < deadline, "pg_receivewal outlived its streamer"
            time.sleep(0.05)

    def terminate(self) -> int:
        os.kill(self.pid, signal.SIGTERM)
        return self.process.wait(timeout=120)


class Writer(threading.Thread):
    """Inserts timestamped rows, one transaction each, until stopped; keeps each row's
    note and commit time as the server reported it."""

    def __init__(self, site: PitrSite) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(site.server.url("shop"), autocommit=True)
        self.stopping = threading.Event()
        # (note, its `at` = clock_timestamp() inside the transaction, when the commit was
        # acknowledged): the commit itself happened between the two
        self.committed: list[tuple[str, datetime, datetime]] = []

    def run(self) -> None:
        number = 0
        while not self.stopping.is_set():
            number += 1
            row = self.conn.execute(
                "INSERT INTO events (note, payload) VALUES (%s, repeat(md5(random()::text), 40)) "
                "RETURNING at", (f"n{number}",),
            ).fetchone()  # fmt: skip
            assert row is not None
            self.committed.append((f"n{number}", row[0], datetime.now(UTC)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        self.conn.close()


def _events(site: PitrSite) -> None:
    site.sql("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL, payload text, "
             "at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip


def _wait_stored(site: PitrSite, name: str, streamer: Streamer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if WalArchive.load(open_repo(site)).get(name) is not None:
            return
        assert streamer.process.poll() is None, streamer.output()
        time.sleep(0.3)
    raise AssertionError(f"{name} never reached the repository: {streamer.output()[-3000:]}")


def _status(site: PitrSite) -> dict:  # type: ignore[type-arg]
    result = site.cli("wal", "status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_kill_9_of_the_streamer_loses_no_segment(stream_site: PitrSite) -> None:
    site = stream_site
    _events(site)
    first = site.sql("SELECT pg_walfile_name(pg_current_wal_lsn())", "postgres")
    writer = Writer(site)
    writer.start()
    rng = random.Random(int(time.time()))
    kills = []
    logs = []
    try:
        for round_ in range(6):
            streamer = Streamer(site)
            logs.append(streamer)
            if round_ == 0:
                assert "created the replication slot safehold" in streamer.output() or (
                    site.sql("SELECT count(*) FROM pg_replication_slots", "postgres") == "1"
                )
            time.sleep(rng.uniform(0.3, 3.0))
            if round_ % 3 == 2:  # pg_receivewal alone dies: the streamer starts a new one
                os.kill(streamer.receiver, signal.SIGKILL)
                streamer.receiver = streamer._receiver_pid()
                time.sleep(rng.uniform(0.3, 2.0))
            streamer.kill_9()
            kills.append(round_)
    finally:
        writer.stop()
    assert len(writer.committed) > 100, "the writer wrote while the streamer was killed"
    last = site.sql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")
    streamer = Streamer(site)
    _wait_stored(site, last, streamer)
    assert streamer.terminate() == 0, streamer.output()
    assert "stopped: pg_receivewal ended" in streamer.output()
    for one in [*logs, streamer]:  # the pusher never failed (a kill only cuts it short)
        assert "retrying)" not in one.output() and "cannot move" not in one.output()
    assert TEST_PASSWORD not in streamer.output() and site.server.password not in streamer.output()

    archive = WalArchive.load(open_repo(site))
    assert int(last[16:], 16) - int(first[16:], 16) >= 5, "several segments were streamed"
    for number in range(int(first[16:], 16), int(last[16:], 16) + 1):
        name = f"{first[:16]}{number:08X}"
        assert archive.get(name) is not None, f"{name} was lost across the kills"
    [timeline] = _status(site)["timelines"]
    assert timeline["gaps"] == [], timeline
    assert not [p for p in site.spool.iterdir() if len(p.name) == 24], "the spool was drained"
    assert not [n for n in archive.files if n.endswith(".partial")], "no unfinished segment"
    receiving = [p.name for p in (site.spool / "receiving").iterdir()]
    assert all(name.endswith(".partial") for name in receiving), receiving
    slot = site.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'safehold'",
                    "postgres")  # fmt: skip
    assert slot == "f", "after SIGTERM nothing holds the slot"


def test_streamed_archive_restores_to_a_time_and_sigterm_stops_cleanly(
    stream_site: PitrSite,
) -> None:
    site = stream_site
    _events(site)
    streamer = Streamer(site, "--synchronous")
    second = site.cli("wal-stream")  # one streamer per spool
    assert second.returncode == 1 and "another streamer or pusher holds the spool" in second.stderr
    writer = Writer(site)
    writer.start()
    try:
        time.sleep(1.0)
        site.ok("pitr", "basebackup", timeout=300)
        time.sleep(2.0)
        target = datetime.now(UTC)
        time.sleep(2.0)
    finally:
        writer.stop()
    site.sql("DROP TABLE events")  # the mistake
    last = site.sql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")
    _wait_stored(site, last, streamer)
    slot = _status(site)["slot"]
    assert slot["active"] and slot["problem"] is None, slot
    assert "slot safehold: in use by the streamer" in site.ok("wal", "status")
    assert streamer.terminate() == 0, streamer.output()
    assert not _alive(streamer.receiver)
    assert "(synchronous)" in streamer.output()
    _slot_without_streamer_is_seen(site)

    at = target.isoformat(sep=" ")
    into = site.server.url("shop_restored")
    text = site.ok("restore", "latest", "--source", "db", "--at", at, "--into", into,
                   timeout=600)  # fmt: skip
    assert "restored db to the moment" in text
    surely = [note for note, _, acked in writer.committed if acked <= target]
    maybe = [note for note, at, acked in writer.committed if at <= target < acked]
    assert 10 < len(surely) < len(writer.committed) and len(maybe) <= 1
    restored = site.sql("SELECT note FROM events ORDER BY id", "shop_restored").splitlines()
    # exactly the rows committed before the target: every row acknowledged before it, none
    # begun after it (a row whose commit straddles the target may go either way)
    assert restored in (surely, surely + maybe), (len(restored), len(surely), maybe)


def _slot_without_streamer_is_seen(site: PitrSite) -> None:
    """With the streamer stopped, the slot keeps WAL on the server: wal status, status,
    watch's metrics say so, with the fix."""
    site.sql("CREATE TABLE held AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    slot = _status(site)["slot"]
    assert not slot["active"] and slot["retained_bytes"] > 0, slot
    assert "no streamer uses the replication slot safehold" in slot["problem"]
    text = site.ok("wal", "status")
    assert "slot: no streamer uses the replication slot safehold; the server keeps" in text
    status = json.loads(site.cli("status", "--json").stdout)
    [item] = [i for i in status["items"] if i["key"] == "pitr:db"]
    assert item["level"] == "warn" and "no streamer uses" in item["detail"], item
    assert "safehold wal-stream --source db" in item["fix"]
    metrics = site.ok("metrics")
    assert 'safehold_wal_slot_active{app="shop",env="prod",source="db"} 0' in metrics
    assert "safehold_wal_slot_retained_bytes{" in metrics
    watch = json.loads(site.cli("watch", "--json", "--no-alerts").stdout)
    [finding] = [f for f in watch["findings"] if f["key"] == "wal:db"]
    assert finding["ok"] is False and "no streamer uses" in finding["detail"], finding


def test_missing_replication_rights_are_one_line_errors_with_the_fix(
    stream_site: PitrSite,
) -> None:
    site = stream_site
    site.sql("CREATE ROLE plain LOGIN PASSWORD 'plain-pass'", "postgres")
    site.sql("GRANT pg_read_all_settings, pg_read_all_stats TO plain", "postgres")
    env = {**site.env, "SHOP_DB_URL": site.server.url("shop", user="plain", password="plain-pass")}
    python, pythonpath = server_python()
    argv = ["env", f"PYTHONPATH={pythonpath}", python, "-m", "safehold", "--plan",
            str(site.plan), "wal-stream"]  # fmt: skip
    if AS_ROOT:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    refused = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    error, hint = refused.stderr.strip().splitlines()
    assert error.startswith("error: streaming WAL from") and "NOREPLICATION" in error
    assert hint == 'hint: ALTER ROLE "plain" REPLICATION (as a superuser)'
    assert "plain-pass" not in refused.stderr

    # the right is there, pg_hba.conf has no replication line
    site.sql("ALTER ROLE plain REPLICATION", "postgres")
    hba = site.server.data / "pg_hba.conf"
    hba.write_text("\n".join(line for line in hba.read_text().splitlines()
                             if "replication" not in line) + "\n")  # fmt: skip
    site.sql("SELECT pg_reload_conf()", "postgres")
    time.sleep(0.5)
    refused = subprocess.run([*argv, "--check"], env=env, cwd="/", capture_output=True,
                             text=True, timeout=120, check=False)  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    error, hint = refused.stderr.strip().splitlines()
    assert "needs pg_hba_replication" in error and "no pg_hba.conf entry" in error
    assert hint.startswith("hint: add `host replication plain 127.0.0.1/32 scram-sha-256`")

    # pitr setup --mode stream lists every requirement and the statements
    setup = site.cli("pitr", "setup", "--mode", "stream", "--json")
    assert setup.returncode == 3, setup.stdout + setup.stderr
    report = json.loads(setup.stdout)
    checks = {check["name"]: check for check in report["stream"]}
    assert checks["replication_role"]["ok"] and checks["max_wal_senders"]["ok"]
    assert not checks["pg_hba_replication"]["ok"] and not checks["slot"]["ok"]
    assert "SELECT pg_create_physical_replication_slot('safehold', true)" in report["statements"]
    applied = site.cli("pitr", "setup", "--mode", "stream", "--apply")
    assert "pg_hba.conf" in applied.stdout, applied.stdout
    slots = site.sql("SELECT slot_name, restart_lsn IS NOT NULL FROM pg_replication_slots",
                     "postgres")  # fmt: skip
    assert slots == "safehold|t", "--apply created the slot with its WAL reserved"
    assert not checks["max_slot_wal_keep_size"]["ok"]  # a stopped streamer's disk risk
    assert site.sql("SHOW max_slot_wal_keep_size", "postgres") == "20GB"
    assert site.sql("SHOW archive_timeout", "postgres") == "30s"  # half the plan's 1m RPO


def test_safehold_run_keeps_the_streamer_running_and_systemd_gets_a_service(
    stream_site: PitrSite,
) -> None:
    site = stream_site
    with open(site.plan, "a") as plan:
        plan.write('[schedule]\nbackup = "daily at 02:00"\nprune = "off"\ndrill = "off"\n'
                   'watch = "off"\n')  # fmt: skip
    units = site.ok("schedule", "install", "--systemd", "--print")
    assert "### safehold-shop-prod-wal-stream-db.service" in units, units
    unit = units.split("### safehold-shop-prod-wal-stream-db.service", 1)[1].split("###")[0]
    assert "Type=simple" in unit and "Restart=always" in unit
    assert "wal-stream --source db" in unit
    crontab = site.ok("schedule", "install", "--crontab", "--print")
    assert "wal-stream" not in crontab  # cron cannot supervise it (install says so)

    _events(site)
    python, pythonpath = server_python()
    argv = ["env", f"PYTHONPATH={pythonpath}", python, "-m", "safehold", "--plan",
            str(site.plan), "run"]  # fmt: skip
    if AS_ROOT:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    log = site.root / "run.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(argv, env=site.env, cwd="/", stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while site.sql("SELECT count(*) FROM pg_stat_replication", "postgres") != "1":
            assert time.monotonic() < deadline, log.read_text()
            assert daemon.poll() is None, log.read_text()
            time.sleep(0.2)
        # the server ends the stream: pg_receivewal exits, the streamer starts it again
        site.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication", "postgres")
        # archive_timeout closes the segment without archive_mode (no pg_switch_wal here):
        # what bounds the streaming mode's RPO on a quiet server
        site.sql("ALTER SYSTEM SET archive_timeout = 2", "postgres")
        site.sql("SELECT pg_reload_conf()", "postgres")
        site.sql("INSERT INTO events (note) SELECT 'x' FROM generate_series(1, 200)")
        name = site.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())", "postgres")
        deadline = time.monotonic() + 90
        while WalArchive.load(open_repo(site)).get(name) is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        kids = [k for kid in _children(daemon.pid) for k in [kid, *_children(kid)]]
        runner = [k for k in kids if _cmdline(k).endswith(b"\0run\0")]
        os.kill(runner[0] if runner else daemon.pid, signal.SIGTERM)
        assert daemon.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert "wal-stream-db: starting" in text and "stopping wal-stream-db (SIGTERM)" in text
    assert "stopped: pg_receivewal ended" in text
    assert "pg_receivewal exited" in text and "restarting in 1 s" in text
    assert site.sql("SELECT count(*) FROM pg_stat_replication", "postgres") == "0"
