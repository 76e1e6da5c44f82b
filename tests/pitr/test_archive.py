"""WAL archiving into the repository: `safehold wal-push %p` as PostgreSQL's archive_command,
sync and async, idempotent, loud on a conflict; `wal status` shows the chain."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import time

from safehold.pitr.spoolfile import pusher_running, spooled_names
from safehold.pitr.store import WalArchive
from tests.pitr.conftest import PitrSite, open_repo, stop_pusher


def _status(site: PitrSite) -> dict:  # type: ignore[type-arg]
    result = site.cli("wal", "status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_sync_archive_command_stores_every_segment_and_is_idempotent(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE t (id int, payload text)")
    for _ in range(3):
        site.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 3000) g")
        last = site.switch_and_wait()
    status = _status(site)
    [timeline] = status["timelines"]
    assert timeline["timeline"] == 1 and timeline["gaps"] == []
    assert timeline["last"] >= last
    assert int(site.sql("SELECT failed_count FROM pg_stat_archiver", "postgres")) == 0

    # the server's own copy of an archived segment, pushed again: same content -> success
    copy = site.root / last
    shutil.copy(site.server.data / "pg_wal" / last, copy)
    copy.chmod(0o644)
    again = site.cli("wal-push", str(copy))
    assert again.returncode == 0, again.stderr
    assert "already stored" in again.stdout

    # the same name with other content: a loud failure, nothing stored
    data = bytearray(copy.read_bytes())
    data[5000] ^= 0xFF
    copy.write_bytes(bytes(data))
    conflict = site.cli("wal-push", str(copy))
    assert conflict.returncode == 1
    assert f"{last} is already archived with OTHER content" in conflict.stderr
    assert "Traceback" not in conflict.stderr

    # not a WAL file: a one-line error
    junk = site.root / "notes.txt"
    junk.write_text("hello")
    refused = site.cli("wal-push", str(junk))
    assert refused.returncode == 1 and "is not a WAL file name" in refused.stderr


def test_wal_batches_are_not_backups_and_restic_can_read_them(
    pitr_site: PitrSite, restic_bin: str, cli_env: dict[str, str]
) -> None:
    site = pitr_site
    site.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    segment = site.switch_and_wait()
    listed = json.loads(site.cli("snapshots", "--json").stdout)
    assert listed == []  # WAL batches are storage, not snapshots of the app
    restic = [restic_bin, "-r", str(site.repo), "--no-cache"]
    batches = json.loads(subprocess.run(
        [*restic, "snapshots", "--tag", "safehold-wal", "--json"], env=cli_env,
        capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    stored = WalArchive.load(open_repo(site)).get(segment)
    assert stored is not None
    found = [b["id"] for b in batches if b["id"] == stored.snapshot_id]
    assert found, "the batch holding the segment is a restic snapshot tagged safehold-wal"
    dumped = subprocess.run([*restic, "dump", found[0], f"/wal/{segment}"], env=cli_env,
                            capture_output=True, check=True).stdout  # fmt: skip
    assert len(dumped) == stored.size == 1024 * 1024
    assert hashlib.sha256(dumped).hexdigest() == stored.sha256


def _wait_pushed(site: PitrSite, segment: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if WalArchive.load(open_repo(site)).get(segment) is not None and not spooled_names(
            site.spool
        ):
            return
        time.sleep(0.2)
    log = (site.spool / "pusher.log").read_text() if (site.spool / "pusher.log").exists() else ""
    raise AssertionError(f"{segment} never reached the repository; pusher log: {log[-2000:]}")


def test_async_spool_and_pusher_started_on_demand(async_site: PitrSite) -> None:
    site = async_site
    site.sql("CREATE TABLE t (id int, payload text)")
    segments = []
    for _ in range(4):
        site.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        segments.append(site.switch_and_wait())
    _wait_pushed(site, segments[-1])
    archive = WalArchive.load(open_repo(site))
    assert all(archive.get(name) is not None for name in segments)
    status = site.cli("wal", "status", "--spool", str(site.spool))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "0 file(s) waiting" in status.stdout
    assert "timeline 1:" in status.stdout and "GAP" not in status.stdout


def test_kill_9_of_the_pusher_loses_no_acknowledged_segment(async_site: PitrSite) -> None:
    """The pusher is killed -9 at random moments while the server archives; every segment
    PostgreSQL was told is archived ends up in the repository, and the chain has no gap."""
    site = async_site
    site.sql("CREATE TABLE t (id int, payload text)")
    first = site.sql("SELECT pg_walfile_name(pg_current_wal_lsn())", "postgres")
    rng = random.Random(11)
    kills = 0
    last = first
    for round_ in range(10):
        site.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 4000) g")
        last = site.switch_and_wait()
        lock = site.spool / "pusher.lock"
        started = time.monotonic()  # the push just now started a pusher if none ran
        while (
            round_ % 2 == 0 and not pusher_running(site.spool) and time.monotonic() < started + 15
        ):
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 0.6))
        if round_ % 2 == 0 and lock.exists() and pusher_running(site.spool):
            stop_pusher(lock)  # kill -9, wherever it is
            kills += 1
    assert kills >= 3
    site.sql("INSERT INTO t VALUES (0, 'restart the pusher')")
    tail = site.switch_and_wait()  # this push starts a new pusher, which drains the spool
    _wait_pushed(site, tail)
    archive = WalArchive.load(open_repo(site))
    status = _status(site)
    [timeline] = status["timelines"]
    assert timeline["gaps"] == [], timeline
    for number in range(int(first[16:], 16), int(last[16:], 16) + 1):
        name = f"{first[:16]}{number:08X}"
        assert archive.get(name) is not None, f"{name} was acknowledged but is not stored"
