"""WAL archiving throughput fixes: a sync push's cost does not grow with the archive (it looks
names up, it lists nothing and reads no index), the read-ahead pusher acknowledges segments
that are already in the repository, and a segment still being written is refused."""

from __future__ import annotations

import collections
import json
import os
import random
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.backends.base import FileInfo
from safehold.backends.local import LocalBackend
from safehold.pitr import store
from safehold.pitr.errors import PitrError, WalConflictError
from safehold.pitr.spool import Pusher
from safehold.pitr.spoolfile import (
    ACK_DIR,
    acknowledge,
    pusher_running,
    recorded_stored,
    spool_file,
    spooled_names,
)
from safehold.pitr.store import WAL_NAMES, WalArchive, describe_file, lookup, push_files
from safehold.repo.check import Checker
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from tests.pitr.conftest import PitrSite, give_to_postgres, open_repo, stop_pusher

SEGMENT = 1024 * 1024
SYSID = 7_300_000_000_000_000_042
PASSWORD = b"wal rate"


def make_segment(folder: Path, number: int, size: int = SEGMENT, salt: bytes = b"") -> Path:
    """A segment with a valid long page header; each page different (as WAL pages are)."""
    name = f"00000001{number // 256:08X}{number % 256:08X}"
    header = struct.pack("<HHIQ", 0xD110, 0x0002, 1, number * SEGMENT)
    header += b"\0" * 8 + struct.pack("<QII", SYSID, SEGMENT, 8192)
    body = bytearray(SEGMENT)
    body[: len(header)] = header
    for page in range(1, SEGMENT // 8192):
        body[page * 8192 : page * 8192 + 40] = os.urandom(24) + salt.ljust(16, b"\0")[:16]
    path = folder / name
    path.write_bytes(bytes(body[:size]))
    return path


class CountingBackend(LocalBackend):
    """A local backend that counts what a push asks of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lists: collections.Counter[str] = collections.Counter()
        self.bytes_read = 0
        self.gets = 0

    def list(self, prefix: str) -> Iterator[FileInfo]:
        self.lists[prefix] += 1
        return super().list(prefix)

    def get(self, name: str) -> bytes:
        data = super().get(name)
        self.gets += 1
        self.bytes_read += len(data)
        return data

    def reset(self) -> None:
        self.lists.clear()
        self.bytes_read = self.gets = 0


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, kdf=KdfParams(1024, 8, 1))
    return tmp_path / "repo"


def _push_one(root: Path, path: Path) -> CountingBackend:
    backend = CountingBackend(root)
    repo = Repository.open(backend, PASSWORD)
    backend.reset()  # opening (config, keys) is the same for any archive size
    push_files(repo, [describe_file(path)])
    return backend


def test_sync_push_cost_does_not_grow_with_the_archive(repo_root: Path, tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    segments = [make_segment(wal, n) for n in range(1, 26)]
    _push_one(repo_root, segments[0])  # the first push also finds the archive empty (once)
    small = _push_one(repo_root, segments[1])
    for path in segments[2:-1]:  # 22 more batches (22 more snapshots and index files)
        _push_one(repo_root, path)
    big = _push_one(repo_root, segments[-1])
    # nothing is listed: neither the snapshots nor the index nor the records
    listed = [p for p in big.lists if p.startswith(("snapshots", "index", "safehold"))]
    assert not listed, big.lists
    assert big.lists == small.lists
    assert big.gets == small.gets
    assert big.bytes_read <= small.bytes_read + 64, (small.bytes_read, big.bytes_read)

    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    archive = WalArchive.load(repo)
    assert len(archive.batches) == 25 and set(archive.files) == {p.name for p in segments}
    # idempotent and loud, still with lookups only
    again = Repository.open(CountingBackend(repo_root), PASSWORD)
    assert push_files(again, [describe_file(segments[3])]).already == [segments[3].name]
    other = tmp_path / "other"
    other.mkdir()
    changed = make_segment(other, 4, salt=b"other server")
    with pytest.raises(WalConflictError, match="already archived with OTHER content"):
        push_files(again, [describe_file(changed)])


def test_an_archive_from_before_the_name_records_is_read_once(
    repo_root: Path, tmp_path: Path
) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    first, second = make_segment(wal, 1), make_segment(wal, 2)
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    push_files(repo, [describe_file(first)])
    # as an older safehold left it: batches, no name records
    for info in list(repo.backend.list(f"safehold/{WAL_NAMES}/")):
        repo.backend.delete(info.name)
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    assert lookup(repo, first.name) is None
    assert push_files(repo, [describe_file(first)]).already == [first.name]
    assert lookup(repo, first.name) is not None
    backend = _push_one(repo_root, second)
    assert not backend.lists.get("snapshots/")  # the backfill happened once, not per push


def test_a_segment_still_being_written_is_refused(repo_root: Path, tmp_path: Path) -> None:
    wal = tmp_path / "wal"
    wal.mkdir()
    short = make_segment(wal, 7, size=SEGMENT // 2)
    with pytest.raises(PitrError, match="still being written, or truncated"):
        spool_file(tmp_path, short)
    assert not list(tmp_path.glob("0000*"))
    with pytest.raises(PitrError, match="its header says segments are 1048576"):
        describe_file(short)


def test_read_ahead_stores_ready_segments_and_acknowledges_them(
    repo_root: Path, tmp_path: Path
) -> None:
    """A pg_wal with .ready files: the pusher stores them from there (no spool copy); the
    archive_command then succeeds from the record, and fails loudly for other content."""
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    spool = tmp_path / "spool"
    spool.mkdir()
    segments = [make_segment(pg_wal, n) for n in range(1, 12)]
    for path in segments:
        (pg_wal / "archive_status" / f"{path.name}.ready").touch()
    pusher = Pusher(spool, lambda: Repository.open(LocalBackend(repo_root), PASSWORD),
                    wal_dir=pg_wal, read_ahead=4)  # fmt: skip
    done = pusher.run_once()
    assert done.pushed == [p.name for p in segments]
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    assert len(WalArchive.load(repo).batches) == 3  # 4 + 4 + 3 per batch
    for path in segments[:5]:
        assert acknowledge(spool, path, [], wait=0) == "stored"
        (pg_wal / "archive_status" / f"{path.name}.ready").rename(
            pg_wal / "archive_status" / f"{path.name}.done"
        )
    assert not list(spool.glob("0000*")), "acknowledged from the record, nothing spooled"
    # a file changed after it was stored (same name): the record's check fails loudly
    data = bytearray(segments[6].read_bytes())
    data[5000] ^= 0xFF
    segments[6].write_bytes(bytes(data))
    with pytest.raises(WalConflictError, match="OTHER content"):
        recorded_stored(spool, segments[6])
    # the records of archived (.done) segments are forgotten on the next round
    pusher.run_once()
    assert sorted(os.listdir(spool / ACK_DIR)) == [p.name for p in segments[5:]]


# ----- against a real PostgreSQL 15 server ---------------------------------------------------


def _archived_names(site: PitrSite) -> set[str]:
    return set(WalArchive.load(open_repo(site)).files)


def test_kill_9_of_the_read_ahead_pusher_under_load_loses_nothing(async_site: PitrSite) -> None:
    """A writer inserts rows, segments are switched every few tenths of a second, and the
    pusher (reading ahead in pg_wal) is killed -9 at random moments: every segment the server
    was told is archived is in the repository, and `wal status` shows no gap."""
    site = async_site
    site.sql("CREATE TABLE t (id bigserial, at timestamptz DEFAULT now(), payload text)")
    first = site.switch_and_wait()
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                site.sql("INSERT INTO t (payload) SELECT md5(g::text) "
                         "FROM generate_series(1, 2000) g")  # fmt: skip
                time.sleep(0.05)
            except AssertionError as err:  # psql failed
                errors.append(str(err))
                return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    rng = random.Random(1107)
    kills = 0
    lock = site.spool / "pusher.lock"
    try:
        deadline = time.monotonic() + 90  # a killed pusher takes a few seconds to restart
        while time.monotonic() < deadline and (kills < 6 or time.monotonic() < deadline - 70):
            site.sql("SELECT pg_switch_wal()", "postgres")
            time.sleep(rng.uniform(0.05, 0.4))
            if rng.random() < 0.5 and pusher_running(site.spool):
                stop_pusher(lock)  # kill -9, wherever it is: reading, storing, recording
                kills += 1
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert kills >= 6
    try:
        last = site.switch_and_wait(timeout=180)  # the next push starts a pusher again
    except AssertionError:
        log = (site.spool / "pusher.log").read_text(errors="replace")
        raise AssertionError(f"the archive never caught up; pusher log: {log[-3000:]}") from None
    acknowledged = site.sql("SELECT last_archived_wal FROM pg_stat_archiver", "postgres")
    assert acknowledged >= last
    deadline = time.monotonic() + 120  # what was acknowledged from the spool is uploaded
    while spooled_names(site.spool) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not spooled_names(site.spool), (site.spool / "pusher.log").read_text()[-3000:]
    archived = _archived_names(site)
    numbers = range(int(first[16:], 16), int(acknowledged[16:], 16) + 1)
    missing = [f"{first[:16]}{n:08X}" for n in numbers if f"{first[:16]}{n:08X}" not in archived]
    assert not missing, f"acknowledged but not stored: {missing}"
    assert len(numbers) >= 20
    log = (site.spool / "pusher.log").read_text()
    assert "read ahead" in log, log[-2000:]  # the fast path was used, not only spool copies
    status = json.loads(site.cli("wal", "status", "--json").stdout)
    [timeline] = status["timelines"]
    assert timeline["gaps"] == [], timeline
    assert int(site.sql("SELECT count(*) FROM t")) > 0


def test_a_truncated_segment_is_refused_by_both_modes(async_site: PitrSite) -> None:
    """A segment shorter than the server's segment size (still being written, or cut short):
    wal-push and wal-push --async exit non-zero with a one-line error, and store nothing
    (PostgreSQL keeps the segment and retries)."""
    site = async_site
    current = site.sql("SELECT pg_walfile_name(pg_current_wal_lsn())", "postgres")
    short = site.root / current
    short.write_bytes((site.server.data / "pg_wal" / current).read_bytes()[: 300 * 1024])
    give_to_postgres(short)
    for mode in (["wal-push"], ["wal-push", "--async", "--spool", str(site.spool)]):
        result = site.cli(*mode, str(short))
        assert result.returncode != 0, result.stdout
        assert f"{short} is {300 * 1024} bytes, its header says segments are 1048576" in (
            result.stderr
        )
        assert "still being written, or truncated" in result.stderr
        assert "Traceback" not in result.stderr
    assert current not in spooled_names(site.spool)
    assert current not in _archived_names(site)


def test_sync_pushes_without_the_index_leave_a_repository_restic_checks(
    repo_root: Path, tmp_path: Path, restic_bin: str
) -> None:
    """Two segments that share all but their first page: the second sync push does not read
    the index, so it stores the shared chunks again; restic's check accepts the duplicates
    and restic dumps both segments bit for bit."""
    wal = tmp_path / "wal"
    wal.mkdir()
    body = bytearray(os.urandom(SEGMENT))
    paths = []
    for number in (1, 2):
        path = make_segment(wal, number)
        data = bytearray(path.read_bytes()[:8192]) + body[8192:]
        path.write_bytes(bytes(data))
        paths.append(path)
    for path in paths:
        _push_one(repo_root, path)
    env = {"RESTIC_PASSWORD": PASSWORD.decode(), "PATH": os.environ["PATH"],
           "RESTIC_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    check = subprocess.run([restic_bin, "-r", str(repo_root), "check", "--read-data"], env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    # safehold's own check reads the wal-names records (named by HMAC, not by content)
    report = Checker(repo).run(read_data=True)
    assert report.ok and not report.warnings, (report.errors, report.warnings)
    assert report.records_checked == 3  # two names and the "complete" record
    # a record moved to another file's name is found (its key does not match its name)
    names = sorted(info.name for info in repo.backend.list(f"safehold/{WAL_NAMES}/"))
    repo.backend.put(names[0], repo.backend.get(names[1]))
    assert any("its key does not match its name" in e for e in Checker(repo).run().errors)
    repo.backend.put(names[0], b"")  # and a damaged one
    assert not Checker(repo).run().ok
    archive = WalArchive.load(repo)
    for path in paths:
        stored = archive.get(path.name)
        assert stored is not None
        dumped = subprocess.run([restic_bin, "-r", str(repo_root), "dump", stored.snapshot_id,
                                 f"/wal/{path.name}"], env=env, capture_output=True,
                                check=True).stdout  # fmt: skip
        assert dumped == path.read_bytes()


def test_a_crash_between_the_batch_and_its_name_records_keeps_pushes_loud(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push killed after its batch was stored but before the `wal-names` records: a later
    push of OTHER content under that name still fails loudly (the intent record sends it to
    the archive), the same content succeeds and repairs the record. A push killed before its
    batch was written acknowledged nothing, so other content may take the name."""
    wal, other = tmp_path / "wal", tmp_path / "other"
    wal.mkdir()
    other.mkdir()
    first = make_segment(wal, 1)
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    push_files(repo, [describe_file(make_segment(wal, 9))])  # the archive has its records

    def crash(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(store, "record_names", crash)
    with pytest.raises(KeyboardInterrupt):
        push_files(Repository.open(LocalBackend(repo_root), PASSWORD), [describe_file(first)])
    monkeypatch.undo()
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    assert first.name in WalArchive.load(repo).files  # the batch is there, its record is not
    with pytest.raises(WalConflictError, match="already archived with OTHER content"):
        push_files(repo, [describe_file(make_segment(other, 1, salt=b"other server"))])
    assert push_files(repo, [describe_file(first)]).already == [first.name]
    found = lookup(repo, first.name)
    assert found is not None and found.sha256 == describe_file(first).sha256

    # killed before the batch: nothing was acknowledged, the name is free for other content
    second = make_segment(wal, 2)
    monkeypatch.setattr(store.Archiver, "backup_items", crash)
    with pytest.raises(KeyboardInterrupt):
        push_files(Repository.open(LocalBackend(repo_root), PASSWORD), [describe_file(second)])
    monkeypatch.undo()
    repo = Repository.open(LocalBackend(repo_root), PASSWORD)
    replacement = describe_file(make_segment(other, 2, salt=b"other server"))
    assert push_files(repo, [replacement]).stored == [second.name]
    stored = lookup(repo, second.name)
    assert stored is not None and stored.sha256 == replacement.sha256
