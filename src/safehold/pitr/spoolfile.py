"""The spool's files, with nothing but the standard library (and the WAL name rules): the
fast path of `wal-push --async` (cli/entry.py) imports only this, so PostgreSQL's
archive_command pays a bare Python start, not the whole CLI. See spool.py for the design.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from safehold.pitr.errors import PitrError, SpoolFullError, WalConflictError
from safehold.pitr.walnames import parse_wal_name, require_wal_name

LOCK_FILE = "pusher.lock"
LOG_FILE = "pusher.log"
_TMP_PREFIX = ".tmp-"
DEFAULT_MAX_FILES = 256
CONFLICT_FILE = "CONFLICT"  # written by the pusher: a spooled file clashes with the archive


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            one, two = left.read(1024 * 1024), right.read(1024 * 1024)
            if one != two:
                return False
            if not one:
                return True


def spooled_names(spool: Path) -> list[str]:
    """The WAL files waiting in the spool, oldest name first."""
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if parse_wal_name(name) is not None)


def spool_file(spool: Path, source: Path, max_files: int = DEFAULT_MAX_FILES) -> str:
    """Put `source` into the spool durably. Returns "spooled" or "already" (the same file is
    already waiting); raises WalConflictError for other content, SpoolFullError when full."""
    name = source.name
    require_wal_name(name)
    if not spool.is_dir():
        raise PitrError(
            f"the WAL spool folder {spool} does not exist",
            hint=f"create it, owned by the account PostgreSQL runs as: mkdir -p {spool}",
        )
    conflict = spool / CONFLICT_FILE
    if conflict.exists():  # every push fails until a person looked: loud, in PostgreSQL's log
        raise WalConflictError(conflict.read_text(errors="replace").strip().splitlines()[0])
    target = spool / name
    if target.exists():
        if _same_content(source, target):
            return "already"
        raise WalConflictError(f"{name} is already in the spool {spool} with OTHER content")
    if len(spooled_names(spool)) >= max_files:
        raise SpoolFullError(f"the WAL spool {spool} already holds {max_files} files")
    tmp = spool / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        os.rename(tmp, target)
        fsync_dir(spool)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PitrError(f"cannot spool {source} into {spool}: {err.strerror}") from None
    return "spooled"


@contextlib.contextmanager
def pusher_lock(spool: Path) -> Iterator[IO[str] | None]:
    """The spool's lock, held while a pusher runs; yields None when another pusher holds it."""
    handle = open(spool / LOCK_FILE, "a+")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()


def pusher_running(spool: Path) -> bool:
    """Whether a pusher holds the spool's lock right now."""
    if not (spool / LOCK_FILE).exists():
        return False
    with pusher_lock(spool) as held:
        return held is None


def clean_stale_temp_files(spool: Path, older_than: float = 3600.0) -> int:
    """Remove temp files of spool copies that were killed halfway (PostgreSQL retried them)."""
    removed = 0
    cutoff = time.time() - older_than
    for entry in os.scandir(spool):
        if entry.name.startswith(_TMP_PREFIX) and entry.stat().st_mtime < cutoff:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed


def record_conflict(spool: Path, message: str) -> None:
    """Make every later `wal-push --async` fail with `message` (see spool_file)."""
    (spool / CONFLICT_FILE).write_text(message + "\n")


def start_pusher(spool: Path, global_args: list[str], idle_exit: int = 60) -> None:
    """Start a pusher for `spool` in the background (its own session, its output appended to
    the spool's log). `global_args` are the options (--plan, -r, ...) it opens the
    repository with. A second pusher started by a race finds the lock held and exits."""
    argv = [sys.executable, "-m", "safehold", *global_args, "wal-push", "--daemon",
            "--spool", str(spool), "--idle-exit", str(idle_exit)]  # fmt: skip
    with open(spool / LOG_FILE, "ab") as log:
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
            start_new_session=True, close_fds=True,
        )  # fmt: skip
