"""Backend fixtures. To run the conformance suite on another backend (s3, sftp, ...), add a
factory to BACKEND_FACTORIES: it gets pytest's `tmp_path` and must return a backend at a fresh,
not yet created location (skip with `pytest.skip` when the service is unavailable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.backends.base import Backend
from safehold.backends.local import LocalBackend
from safehold.backends.memory import MemoryBackend
from tests.s3server import s3_conformance_backend
from tests.sshserver import shared_sshd

BackendFactory = Callable[[Path], Backend]

BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "memory": lambda tmp_path: MemoryBackend("conformance"),
    "local": lambda tmp_path: LocalBackend(tmp_path / "repo"),
    "sftp": lambda tmp_path: shared_sshd().backend(tmp_path / "repo"),
    "s3": s3_conformance_backend,
}


@pytest.fixture(params=list(BACKEND_FACTORIES))
def fresh_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A backend whose location does not exist yet."""
    return BACKEND_FACTORIES[request.param](tmp_path)


@pytest.fixture
def backend(fresh_backend: Backend) -> Backend:
    """A backend prepared for a repository (`create()` done)."""
    fresh_backend.create()
    return fresh_backend
