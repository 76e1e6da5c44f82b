"""The index decoder's forked workers never outlive their process (they hold its locks)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Holds an flock, opens a decoder with worker processes, prints its pid and its workers' pids.
_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    from safehold.repo.index import IndexDecoder
    lock = open(sys.argv[1], "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    decoder = IndexDecoder(16).__enter__()
    pool = decoder._pool
    workers = [] if pool is None else list(pool._processes)
    print(os.getpid(), *workers, flush=True)
    time.sleep(120)
    """
)


def _lock_is_free(path: Path) -> bool:
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by init) is dead for our purpose
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
                    reason="worker processes are used on Linux with two or more cores")  # fmt: skip
def test_workers_die_with_a_parent_killed_9_and_release_its_locks(tmp_path: Path) -> None:
    lock = tmp_path / "held.lock"
    lock.touch()
    workers: list[int] = []
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        pids = [int(word) for word in holder.stdout.readline().split()]
        parent, workers = pids[0], pids[1:]
        assert workers, "the decoder started no worker processes"
        assert not _lock_is_free(lock)
        os.kill(parent, signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            any(_alive(pid) for pid in workers) or not _lock_is_free(lock)
        ):
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], "orphaned decoder workers live on"
        assert _lock_is_free(lock), "the killed process's lock is still held by its workers"
    finally:
        holder.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
