"""The restorer's forked pack workers: one that dies costs nothing but time."""

from __future__ import annotations

import os
import signal
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
