"""A lock that cannot be kept fresh stops the operation holding it (restic's lock.go).

The refresh runs with intervals of a few hundredths of a second; faults come from a memory
backend whose lock writes fail or hang on request. Nothing waits for a fixed time: every wait
is for an event or a condition, with a deadline far beyond what a loaded machine needs.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from safehold.app.copy import Copier
from safehold.backends.base import ObjectData
from safehold.backends.memory import MemoryBackend
from safehold.errors import BackendError, ExitCode, LockLostError, RepositoryLockedError
from safehold.fs.archiver import Archiver, BackupItem, BackupOptions
from safehold.fs.restorer import Restorer
from safehold.repo.check import Checker
from safehold.repo.clock import Host
from safehold.repo.format import FileType
from safehold.repo.key import KdfParams
from safehold.repo.lock import LockTimings
from safehold.repo.progress import Progress
from safehold.repo.prune import execute_prune, plan_prune
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

PASSWORD = b"lock refresh tests"
HOST = Host("test-host", "tester", 1000, 1000, os.getpid())
LIMIT_S = 60.0  # how long a condition may take to come on a loaded machine
# Refresh often; give up after 5 s without a good refresh (22.5 minutes in production).
FAST = LockTimings(refresh_interval_s=0.02, retry_interval_s=0.02, give_up_after_s=5.0)
# Refresh often, never give up within a test: only a removed lock ends these.
PATIENT = LockTimings(refresh_interval_s=0.02, retry_interval_s=0.02, give_up_after_s=3600.0)
MIB = 1024 * 1024


class LockFaults(MemoryBackend):
    """Lock writes fail (the next `fail_next` ones, or all while `failing`) or, while
    `hanging`, wait for `release`; everything else works."""

    def __init__(self) -> None:
        super().__init__("lock-faults")
        self.failing = False
        self.fail_next = 0
        self.failures = 0
        self.recovered = threading.Event()  # a lock write succeeded after a failure
        self.hanging = False
        self.hung = threading.Event()  # a lock write is waiting for `release`
        self.release = threading.Event()

    def put(self, name: str, data: ObjectData) -> None:
        if name.startswith("locks/"):
            self._lock_write()
        super().put(name, data)
        if name.startswith("locks/") and self.failures:
            self.recovered.set()

    def _lock_write(self) -> None:
        if self.hanging:
            self.hung.set()
            self.release.wait(LIMIT_S)
        if self.failing or self.fail_next > 0:
            self.fail_next -= 1
            self.failures += 1
            raise BackendError("lock write refused (test fault)")

    def lock_ids(self) -> list[str]:
        return [info.name for info in self.list("locks/")]


@pytest.fixture
def backend() -> LockFaults:
    return LockFaults()


@pytest.fixture
def repo(backend: LockFaults) -> Repository:
    repo = Repository.init(backend, PASSWORD, kdf=KdfParams(n=1024, r=8, p=1), host=HOST)
    repo.lock_timings = FAST
    return repo


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.005)


def _lock_lost(repo: Repository) -> bool:
    try:
        repo.check_lock()
    except LockLostError:
        return True
    return False


def _backup(repo: Repository, source: Path, **options: int) -> Snapshot:
    with repo.locked(exclusive=False):
        archiver = Archiver(repo, BackupOptions(**options))  # type: ignore[arg-type]
        return archiver.backup([str(source)]).snapshot


def _files(directory: Path, sizes: list[int], seed: int) -> Path:
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    for number, size in enumerate(sizes):
        (directory / f"file-{number}.bin").write_bytes(rng.randbytes(size))
    return directory


class _StreamUntil:
    """A stream (a database dump, say) that produces data, then waits at `pause()` for the
    test's condition before it produces the rest."""

    def __init__(self, pause: Callable[[], None]) -> None:
        self._pause = pause
        self._parts = [random.Random(1).randbytes(200_000), random.Random(2).randbytes(200_000)]
        self._paused = False

    def readinto(self, buffer: memoryview) -> int:
        if not self._parts:
            return 0
        if len(self._parts) == 1 and not self._paused:
            self._paused = True
            self._pause()
        part = self._parts.pop(0)
        buffer[: len(part)] = part
        return len(part)


def _stream_item(name: bytes, pause: Callable[[], None]) -> BackupItem:
    @contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield cast(BinaryIO, _StreamUntil(pause))

    return BackupItem([name], stream=opener, parents_on_disk=False)


def _assert_valid(repo: Repository, snapshots: list[Snapshot]) -> None:
    """`check` passes, and the repository holds exactly these snapshots."""
    fresh = Repository.open(repo.backend, PASSWORD, host=HOST)
    report = Checker(fresh).run(read_data=True)
    assert report.errors == []
    assert [s.id for s in fresh.list_snapshots()] == [s.id for s in snapshots]


# ----- a refresh that keeps failing -------------------------------------------------------


def test_a_refresh_failing_until_the_deadline_stops_the_backup_before_its_snapshot(
    repo: Repository, backend: LockFaults, tmp_path: Path
) -> None:
    earlier = _backup(repo, _files(tmp_path / "earlier", [1000, 50_000], seed=1))
    indexes_before = repo.list_ids(FileType.INDEX)
    big = _files(tmp_path / "big", [3 * MIB], seed=2)

    def lose_the_lock() -> None:  # runs inside the backup, on a reader thread
        _wait_for(lambda: len(list(backend.list("data/"))) > 1, "a pack of this backup")
        backend.failing = True
        _wait_for(lambda: _lock_lost(repo), "the loss of the lock")

    targets = [
        BackupItem([b"big"], real_path=os.fsencode(big)),
        _stream_item(b"dump.sql", lose_the_lock),
    ]
    with pytest.raises(LockLostError) as caught, repo.locked(exclusive=False):
        Archiver(repo, BackupOptions(pack_size=512 * 1024)).backup_items(
            targets, paths=["/big", "/dump.sql"]
        )
    error = caught.value
    assert isinstance(error, RepositoryLockedError)
    assert error.exit_code == ExitCode.LOCKED == 11
    assert error.message.startswith(
        "repository lock lost: could not refresh the shared lock on memory:lock-faults since 20"
    )
    assert "lock write refused (test fault)" in error.message
    assert "earlier snapshots are intact" in error.hint
    assert backend.failures >= 2  # retried before giving up

    # nothing was written after the loss: no snapshot, no index; the packs written before
    # are only unreferenced (check warns, prune removes them)
    assert repo.list_ids(FileType.INDEX) == indexes_before
    backend.failing = False
    assert backend.lock_ids() == []  # the lock was removed on the way out
    _assert_valid(repo, [earlier])
    report = Checker(Repository.open(backend, PASSWORD, host=HOST)).run()
    assert any("not referenced by any index" in warning for warning in report.warnings)


def test_a_refresh_that_fails_once_and_then_succeeds_does_not_stop_the_backup(
    repo: Repository, backend: LockFaults, tmp_path: Path
) -> None:
    repo.lock_timings = PATIENT
    source = _files(tmp_path / "src", [1000, 300_000], seed=3)

    def fail_twice() -> None:
        backend.fail_next = 2
        assert backend.recovered.wait(LIMIT_S), "no refresh succeeded after the failures"

    with repo.locked(exclusive=False):
        result = Archiver(repo).backup_items(
            [
                BackupItem([b"src"], real_path=os.fsencode(source)),
                _stream_item(b"dump.sql", fail_twice),
            ],
            paths=["/src", "/dump.sql"],
        )
        repo.check_lock()  # still held
        assert len(backend.lock_ids()) == 1  # refreshed: the old lock file was replaced
    assert backend.failures == 2
    assert backend.lock_ids() == []
    _assert_valid(repo, [result.snapshot])


def test_a_refresh_that_hangs_past_the_deadline_is_noticed_by_the_operation(
    repo: Repository, backend: LockFaults
) -> None:
    """The refresh thread is stuck in the storage; the deadline is checked on the caller's
    side too, and once lost the lock stays lost when the hung write returns."""
    repo.lock_timings = LockTimings(0.02, 0.02, give_up_after_s=0.5)
    with pytest.raises(LockLostError) as caught, repo.locked(exclusive=True):
        backend.hanging = True
        assert backend.hung.wait(LIMIT_S)
        _wait_for(lambda: _lock_lost(repo), "the deadline")
        backend.hanging = False
        backend.release.set()
        repo.check_lock()
    assert "could not refresh the exclusive lock" in caught.value.message
    assert "did not answer in time" in caught.value.message
    _wait_for(lambda: backend.lock_ids() == [], "the removal of the late lock")


# ----- a lock removed by someone else ------------------------------------------------------


def test_a_removed_lock_is_noticed_not_recreated_and_stops_every_write(
    repo: Repository, backend: LockFaults, tmp_path: Path
) -> None:
    repo.lock_timings = PATIENT
    earlier = _backup(repo, _files(tmp_path / "src", [1000], seed=4))
    other = Repository.open(backend, PASSWORD, host=HOST)
    with repo.locked(exclusive=False):
        assert other.remove_stale_locks(remove_all=True) == 1  # `unlock --remove-all`
        _wait_for(lambda: _lock_lost(repo), "the loss of the lock")
        assert backend.lock_ids() == []  # not silently recreated
        with pytest.raises(LockLostError) as caught:
            repo.save_snapshot(earlier)
        assert "was removed by another process" in caught.value.message
        for write in (
            lambda: repo.write_pack("ab" * 32, b"data"),
            lambda: repo.save_index({}, ["cd" * 32]),
            lambda: repo.delete(FileType.SNAPSHOT, earlier.id),
            lambda: repo.load_tree(earlier.tree),
        ):
            with pytest.raises(LockLostError):
                write()
        repo.delete(FileType.LOCK, "ef" * 32)  # deleting a lock is never refused
    assert backend.lock_ids() == []
    repo.check_lock()  # the lock is no longer held: nothing to lose
    _assert_valid(repo, [earlier])
    _backup(repo, tmp_path / "src")  # the next run takes a new lock


def test_a_restore_stops_at_the_loss_instead_of_failing_file_by_file(
    repo: Repository, backend: LockFaults, tmp_path: Path
) -> None:
    repo.lock_timings = PATIENT
    snapshot = _backup(repo, _files(tmp_path / "src", [1000, 20_000, 30_000], seed=5))
    with pytest.raises(LockLostError), repo.locked(exclusive=False):
        Repository.open(backend, PASSWORD, host=HOST).remove_stale_locks(remove_all=True)
        _wait_for(lambda: _lock_lost(repo), "the loss of the lock")
        Restorer(repo).restore(snapshot, str(tmp_path / "target"))


def _remove_all_locks(backend: LockFaults) -> None:
    """What `safehold unlock --remove-all` does, from another process's view."""
    Repository.open(backend, PASSWORD, host=HOST).remove_stale_locks(remove_all=True)


def test_a_copy_whose_target_lock_is_removed_writes_no_snapshot_there(
    repo: Repository, backend: LockFaults, tmp_path: Path
) -> None:
    repo.lock_timings = PATIENT
    source = Repository.init(
        MemoryBackend("source"), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1), host=HOST
    )
    _backup(source, _files(tmp_path / "src", [1000, 2 * MIB], seed=6))

    def lose_target_lock(progress: Progress) -> None:
        if progress.phase == "copy blobs" and progress.done == 1:
            _remove_all_locks(backend)
            _wait_for(lambda: _lock_lost(repo), "the loss of the target's lock")

    copier = Copier(source, repo, progress=lose_target_lock, pack_size=512 * 1024)
    with pytest.raises(LockLostError):
        copier.run()
    assert repo.list_ids(FileType.INDEX) == []
    _assert_valid(repo, [])
    assert source.list_ids(FileType.LOCK) == []


def test_a_prune_whose_lock_is_removed_deletes_nothing(
    repo: Repository, backend: LockFaults, tmp_path: Path
) -> None:
    repo.lock_timings = PATIENT
    forgotten = _backup(repo, _files(tmp_path / "old", [100_000, 200_000], seed=7))
    kept = _backup(repo, _files(tmp_path / "new", [150_000], seed=8))
    repo.delete(FileType.SNAPSHOT, forgotten.id)  # `forget`
    stored = sorted(info.name for info in backend.list(""))
    with pytest.raises(LockLostError), repo.locked(exclusive=True):
        plan = plan_prune(repo)
        assert plan.delete_packs or plan.repack_packs
        _remove_all_locks(backend)
        _wait_for(lambda: _lock_lost(repo), "the loss of the lock")
        execute_prune(repo, plan)
    assert sorted(info.name for info in backend.list("")) == stored
    _assert_valid(repo, [kept])


def test_timings_that_would_give_up_before_the_first_refresh_are_refused() -> None:
    default = LockTimings()
    assert default.give_up_after_s == 22.5 * 60  # restic's refreshabilityTimeout
    assert default.refresh_interval_s == 5 * 60
    with pytest.raises(ValueError):
        LockTimings(refresh_interval_s=10, give_up_after_s=10)
    with pytest.raises(ValueError):
        LockTimings(retry_interval_s=0)
