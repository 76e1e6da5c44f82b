"""Storage failures a user meets for real: a full disk and a read-only repository.

They need a small filesystem of their own, so they mount a tmpfs (the test command runs as
root, as CI does). Each must give a one-line error with a hint, a non-zero exit code, no
traceback, and leave every earlier snapshot restorable.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD, RunCli


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the test command runs as root in CI)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
                   check=True)  # fmt: skip
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _assert_clean_failure(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert TEST_PASSWORD not in result.stderr + result.stdout
    first_line = result.stderr.splitlines()[0]
    assert first_line.startswith("error: ") and fragment in first_line, result.stderr
    assert any(line.startswith("hint: ") for line in result.stderr.splitlines())


def test_disk_full_fails_cleanly_and_keeps_earlier_snapshots(
    small_fs: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    repo = str(small_fs / "repo")
    source = tmp_path / "src"
    source.mkdir()
    (source / "small.txt").write_text("the first snapshot fits\n" * 100)
    assert run_cli("-r", repo, "init").returncode == 0
    assert run_cli("-r", repo, "backup", str(source)).returncode == 0

    (source / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    result = run_cli("-r", repo, "backup", str(source))
    _assert_clean_failure(result, "disk full")

    (source / "big.bin").unlink()
    restored = tmp_path / "restored"
    result = run_cli("-r", repo, "restore", "latest", "--target", str(restored))
    assert result.returncode == 0, result.stderr
    assert (restored / str(source).lstrip("/") / "small.txt").read_text().startswith("the first")
    listing = run_cli("-r", repo, "snapshots", "--json")
    assert listing.stdout.count('"id"') == 1
    assert run_cli("-r", repo, "check").returncode == 0


def test_read_only_repository_is_a_permission_error(
    small_fs: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    repo = str(small_fs / "repo")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("hello\n")
    assert run_cli("-r", repo, "init").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    result = run_cli("-r", repo, "backup", str(source))
    _assert_clean_failure(result, "permission denied")
    assert run_cli("-r", repo, "snapshots").returncode == 0
