"""Restores from storage that is not a local folder: S3 (a real SeaweedFS on loopback), SFTP
(a real sshd) and memory. S3 and memory are `forkable`: the pack workers read through their
own copy of the backend (after_fork: a client of their own); SFTP stays on threads."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.backends.base import Backend
from safehold.backends.memory import MemoryBackend
from safehold.fs import restorer as restorer_module
from safehold.fs.archiver import Archiver
from safehold.fs.restorer import RestoreOptions, Restorer
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from tests.s3server import shared_s3
from tests.sshserver import shared_sshd

PASSWORD = b"remote restorer tests"

BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda tmp_path: MemoryBackend("remote-restore"),
    "s3": lambda tmp_path: shared_s3().backend(shared_s3().bucket_name("rst"), "repo"),
    "sftp": lambda tmp_path: shared_sshd().backend(tmp_path / "repo"),
}


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _source(src: Path) -> None:
    """Small files over folders, files of several blobs across packs, duplicates."""
    rng = random.Random(5)
    big = rng.randbytes(3 * 1024 * 1024)
    for number in range(60):
        folder = src / f"d{number % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number}.bin").write_bytes(rng.randbytes(rng.randrange(1, 40_000)))
    (src / "big.bin").write_bytes(big + rng.randbytes(9 * 1024 * 1024))
    (src / "big-copy.bin").write_bytes(big)
    (src / "empty").write_bytes(b"")


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_a_remote_restore_is_bit_exact_on_the_path_its_backend_allows(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restorer_module, "_FORK_AFTER_FILES", 0)
    monkeypatch.setattr(restorer_module, "_FORK_AFTER_BYTES", 0)
    monkeypatch.setattr(restorer_module, "_JOB_BYTES", 64 * 1024)  # files share jobs
    pools: list[int] = []
    start = restorer_module._PackWorkers.start

    def spy(restorer: Restorer, workers: int) -> restorer_module._PackWorkers | None:
        pools.append(workers)
        return start(restorer, workers)

    monkeypatch.setattr(restorer_module._PackWorkers, "start", staticmethod(spy))
    backend = BACKENDS[kind](tmp_path)
    repo = Repository.init(backend, PASSWORD, kdf=KdfParams(n=1024, r=8, p=1))
    src = tmp_path / "src"
    _source(src)
    snapshot = Archiver(repo).backup([str(src)]).snapshot
    target = tmp_path / "target"
    stats = Restorer(repo, RestoreOptions(root=str(src))).restore(snapshot, str(target))
    assert stats.errors == [] and stats.warnings == []
    assert _tree(target) == _tree(src)
    assert bool(pools) == backend.capabilities.forkable
    assert kind == "sftp" or pools, "S3 and memory restores use the worker processes"
    # the parent's own connection still works after its workers made theirs
    assert [s.id for s in repo.list_snapshots()] == [snapshot.id]
    assert backend.get(next(iter(backend.list("keys"))).name)
