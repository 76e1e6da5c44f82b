"""The restorer's forked pack workers: one that dies costs nothing but time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.fs import restorer as restorer_module
from safehold.fs.archiver import Archiver
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
