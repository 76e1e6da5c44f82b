"""The restorer's forked pack workers: one that dies costs nothing but time."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.fs import restorer as restorer_module
from safehold.fs.archiver import Archiver, BackupOptions
from safehold.fs.restorer import RestoreOptions, Restorer
from safehold.repo.repository import Repository
from tests.fs.conftest import PASSWORD
from tests.fs.test_restorer import _mixed_tree, _tree


def _force_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restorer_module, "_FORK_AFTER_FILES", 0)
    monkeypatch.setattr(restorer_module, "_FORK_AFTER_BYTES", 0)
    monkeypatch.setattr(restorer_module, "_JOB_BYTES", 64 * 1024)
    monkeypatch.setattr(restorer_module, "_STALE_FILES", 2)


def test_a_worker_killed_mid_file_leaves_no_half_file(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed -9 half way through a blob's write: its jobs are written
    again by the restore, nothing partial is ever under a final name, no temp file stays."""
    _force_workers(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    _mixed_tree(src)
    snapshot = Archiver(repo).backup([str(src)]).snapshot
    opened = Repository.open(LocalBackend(repo.backend.location), PASSWORD)
    parent = os.getpid()
    marker = tmp_path / "killed"
    pwrite_all = restorer_module._pwrite_all

    def dying(fd: int, data: bytes, offset: int) -> None:
        if os.getpid() != parent and len(data) > 1000:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # another worker died already: this one writes
            else:
                pwrite_all(fd, data[: len(data) // 2], offset)
                os.kill(os.getpid(), signal.SIGKILL)
        pwrite_all(fd, data, offset)

    monkeypatch.setattr(restorer_module, "_pwrite_all", dying)
    target = tmp_path / "target"
    progress: list[int] = []
    stats = Restorer(
        opened, RestoreOptions(root=str(src)), lambda p: progress.append(p.done)
    ).restore(snapshot, str(target))
    assert marker.exists(), "no worker was killed"
    assert stats.errors == []
    assert stats.files == stats.files_total == 48
    assert _tree(target) == _tree(src)
    assert not [name for name in _tree(target) if ".safehold-restore-" in name]
    assert progress and progress == sorted(progress)


_KILLED_RESTORE = """
import os, sys, time
from safehold.backends.local import LocalBackend
from safehold.fs import restorer as module
from safehold.repo.repository import Repository
module._FORK_AFTER_FILES = module._FORK_AFTER_BYTES = 0
module._JOB_BYTES, module._STALE_FILES = 64 * 1024, 2
parent, pids, pwrite_all = os.getpid(), sys.argv[3], module._pwrite_all
def slow(fd, data, offset):
    if os.getpid() != parent:
        open(os.path.join(pids, str(os.getpid())), "w").close()
        pwrite_all(fd, data[: len(data) // 2], offset)
        time.sleep(0.2)  # half a blob written: the restore is killed about now
    pwrite_all(fd, data, offset)
module._pwrite_all = slow
repo = Repository.open(LocalBackend(sys.argv[1]), sys.argv[4].encode())
snapshot = repo.find_snapshot("latest")
module.Restorer(repo, module.RestoreOptions(root=sys.argv[5])).restore(snapshot, sys.argv[2])
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_restore_takes_its_workers_and_leaves_no_half_file(
    repo: Repository, tmp_path: Path
) -> None:
    """kill -9 of the whole restore while its workers write: the workers die with it, and
    every file under its final name is complete (the rest are temporary names only)."""
    src = tmp_path / "src"
    src.mkdir()
    _mixed_tree(src)
    Archiver(repo).backup([str(src)])
    target, pids = tmp_path / "target", tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", _KILLED_RESTORE, str(repo.backend.location), str(target),
            str(pids), PASSWORD.decode(), str(src)]  # fmt: skip
    process = subprocess.Popen(argv, env=env)
    deadline = time.monotonic() + 60
    while not os.listdir(pids) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(pids), "no worker wrote"
    process.kill()
    process.wait()
    workers = [int(name) for name in os.listdir(pids)]
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(_gone(pid) for pid in workers), "a worker outlived the restore"
    expected = _tree(src)
    restored = _tree(target)
    finals = {name: entry for name, entry in restored.items() if ".safehold-restore-" not in name}
    for name, entry in finals.items():
        if entry[0] == "file":
            assert entry == expected[name], f"{name} is under its name but not complete"


def test_files_a_worker_finishes_get_owner_times_and_xattrs(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job carries a file's metadata as plain values, not its node: owner, mode, atime,
    mtime and extended attributes still come back on the files the workers finish, and on
    those split over several jobs (finished by the restore itself)."""
    _force_workers(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    _mixed_tree(src)
    files = sorted(path for path in src.rglob("*") if path.is_file() and not path.is_symlink())
    for number, path in enumerate(files):
        os.chmod(path, 0o640 if number % 2 else 0o604)
        os.utime(path, ns=(1_600_000_000_123_456_789 + number, 1_500_000_000_987_654_321))
        try:
            os.setxattr(path, "user.origin", path.name.encode())
        except OSError:
            pytest.skip("no user xattrs on this filesystem")
        if os.geteuid() == 0:
            os.chown(path, 4321 + number, 8765)
    small_packs = BackupOptions(pack_size=1024 * 1024)  # the big files span several packs
    snapshot = Archiver(repo, small_packs).backup([str(src)]).snapshot
    shared: list[int] = []
    absorb = restorer_module.Restorer._absorb

    def spy(self: Restorer, result: object, files: list[object], split: list[object]) -> None:
        shared.append(len(split))
        absorb(self, result, files, split)  # type: ignore[arg-type]

    monkeypatch.setattr(restorer_module.Restorer, "_absorb", spy)
    target = tmp_path / "target"
    opened = Repository.open(LocalBackend(repo.backend.location), PASSWORD)
    stats = Restorer(opened, RestoreOptions(root=str(src))).restore(snapshot, str(target))
    assert stats.errors == [] and stats.files == stats.files_total == len(files)
    assert shared and max(shared) > 0, "no file was split over jobs"
    assert shared.count(0) > 0, "no file was finished by a worker"
    for path in files:
        name = path.relative_to(src)
        want, got = os.stat(path), os.stat(target / name)
        assert (got.st_mode, got.st_atime_ns, got.st_mtime_ns, got.st_uid, got.st_gid) == (
            want.st_mode, want.st_atime_ns, want.st_mtime_ns, want.st_uid, want.st_gid
        ), name  # fmt: skip
        assert os.getxattr(target / name, "user.origin") == os.getxattr(path, "user.origin")


def test_the_restore_unfreezes_what_it_froze_for_its_workers(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent's objects are frozen out of its collections while the workers share its
    pages, and given back to the collector once they are gone (a long-lived process that
    restores must not keep everything it held then uncollectable)."""
    _force_workers(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    _mixed_tree(src)
    snapshot = Archiver(repo).backup([str(src)]).snapshot
    frozen: list[int] = []
    submit = restorer_module._PackWorkers.submit

    def spy(self: restorer_module._PackWorkers, job: restorer_module._Job) -> object:
        frozen.append(gc.get_freeze_count())
        return submit(self, job)

    monkeypatch.setattr(restorer_module._PackWorkers, "submit", spy)
    before = gc.get_freeze_count()
    opened = Repository.open(LocalBackend(repo.backend.location), PASSWORD)
    stats = Restorer(opened, RestoreOptions(root=str(src))).restore(snapshot, str(tmp_path / "t"))
    assert stats.errors == [] and frozen
    assert min(frozen) > before
    assert gc.get_freeze_count() == before
