"""Run the real `safehold` CLI and the real `restic` as subprocesses, and check their output.

Every run is checked for the two things no command may ever print: a Python traceback, and the
repository password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PASSWORD = "integration pass phrase 7f3c"


def make_env(cache_dir: Path, password: str = PASSWORD) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "RESTIC_"))}
    env.update(
        SAFEHOLD_PASSWORD=password,
        SAFEHOLD_KDF_N="1024",
        RESTIC_PASSWORD=password,
        RESTIC_CACHE_DIR=str(cache_dir),
    )
    return env


def assert_clean_output(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for stream_name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        assert "Traceback" not in text, f"traceback on {stream_name} of {proc.args}:\n{text}"
        for secret in secrets:
            assert secret not in text, f"the password appeared on {stream_name} of {proc.args}"


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{proc.args} exited {proc.returncode}\n"
        f"--stdout--\n{proc.stdout}\n--stderr--\n{proc.stderr}"
    )


def safehold(
    env: Mapping[str, str],
    *args: str | os.PathLike[str],
    expect: int | None = 0,
    timeout: float = 300,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m safehold ARGS`; assert the exit code (unless expect is None)."""
    proc = subprocess.run(
        [sys.executable, "-m", "safehold", *map(os.fspath, args)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        errors="surrogateescape",
    )
    assert_clean_output(proc, env.get("SAFEHOLD_PASSWORD", PASSWORD))
    if expect is not None:
        assert proc.returncode == expect, _describe(proc)
    return proc


def restic(
    env: Mapping[str, str],
    *args: str | os.PathLike[str],
    expect: int | None = 0,
    timeout: float = 300,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["restic", *map(os.fspath, args)],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        errors="surrogateescape",
    )
    if expect is not None:
        assert proc.returncode == expect, _describe(proc)
    return proc


def snapshot_ids(env: Mapping[str, str], repo: Path, tool: str = "safehold") -> list[str]:
    """Full snapshot ids, oldest first, as listed by either tool."""
    import json

    if tool == "safehold":
        listing = json.loads(safehold(env, "-r", repo, "snapshots", "--json").stdout)
    else:
        listing = json.loads(restic(env, "-r", repo, "snapshots", "--json").stdout)
        listing.sort(key=lambda snap: snap["time"])
    return [snap["id"] for snap in listing]


def check_all(env: Mapping[str, str], repo: Path, *, read_data: bool = True) -> None:
    """Both tools' full checks pass, and safehold's reports no warnings either."""
    extra: Sequence[str] = ("--read-data",) if read_data else ()
    restic(env, "-r", repo, "check", *extra)
    proc = safehold(env, "-r", repo, "check", *extra)
    assert "warning" not in proc.stderr, proc.stderr
