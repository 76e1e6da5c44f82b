"""Fixtures for the database sources: real servers (tests/servers.py) and a real repository."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from safehold.backends.local import LocalBackend
from safehold.fs.archiver import Archiver
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

PASSWORD = b"database source tests"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        LocalBackend(tmp_path / "repo"), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1)
    )


def backup(repo: Repository, source: Any) -> tuple[Snapshot, dict[str, Any]]:
    """Back up a source as the plan layer will: its items, then its manifest."""
    result = Archiver(repo).backup_items(source.items(), paths=["/" + source.name])
    assert not result.stats.errors, result.stats.errors
    return result.snapshot, source.manifest()


@dataclass
class SpawnLog:
    """Every subprocess started while the fixture is active: argv and environment."""

    calls: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)

    def argv_text(self) -> str:
        return "\n".join(" ".join(argv) for argv, _ in self.calls)


@pytest.fixture
def spawn_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[SpawnLog]:
    log = SpawnLog()
    original = subprocess.Popen

    class RecordingPopen(original):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
            log.calls.append((argv, dict(kwargs.get("env") or {})))
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    yield log
