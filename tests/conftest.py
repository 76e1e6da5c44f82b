"""Shared fixtures: a fast KDF for test repositories, and running the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.receivers import http_receiver, smtp_receiver  # noqa: F401 - alert receivers
from tests.s3server import s3_server  # noqa: F401 - session fixture
from tests.servers import (  # noqa: F401 - session fixtures
    mariadb_server,
    mariadb_tls_server,
    postgres_server,
    postgres_tls_server,
)
from tests.sshserver import sshd_server  # noqa: F401 - session fixture

TEST_PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def safehold_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test has its own local cache folder (index cache, retain-until dates), never the
    user's ~/.cache: a cache left by another test must not stand in for a repository."""
    path = tmp_path_factory.mktemp("safehold-cache")
    monkeypatch.setenv("SAFEHOLD_CACHE_DIR", str(path))
    return path


@pytest.fixture
def cli_env(tmp_path: Path, safehold_cache_dir: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: password set, scrypt cost lowered for speed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "RESTIC_"))}
    env.update(
        SAFEHOLD_CACHE_DIR=str(safehold_cache_dir),
        SAFEHOLD_PASSWORD=TEST_PASSWORD,
        SAFEHOLD_KDF_N="1024",
        RESTIC_PASSWORD=TEST_PASSWORD,
        RESTIC_CACHE_DIR=str(tmp_path / "restic-cache"),
    )
    return env


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(cli_env: dict[str, str]) -> RunCli:
    """Run `safehold ARGS...` as a real subprocess; returns the completed process."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**cli_env, **(env or {})},
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def restic_bin() -> str:
    path = shutil.which("restic")
    if path is None:
        pytest.fail(
            "restic is not installed: the test command installs it (apt-get install restic)"
        )
    return path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With SAFEHOLD_NO_SKIPS=1 (set by scripts/test-all.sh) a skipped test fails the run:
    a missing server or tool must not quietly hide a gap in CI."""
    if not os.environ.get("SAFEHOLD_NO_SKIPS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
