"""A repository on local disk with a fast key, for the fs tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository

PASSWORD = b"fs tests"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        LocalBackend(tmp_path / "repo"), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1)
    )


def reopen(repo: Repository) -> Repository:
    """A fresh process's view: nothing cached in memory."""
    return Repository.open(LocalBackend(repo.backend.location), PASSWORD)
