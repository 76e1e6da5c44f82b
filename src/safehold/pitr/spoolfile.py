"""The spool's files, with nothing but the standard library (and the WAL name rules): the
fast path of `wal-push --async` (cli/entry.py) imports only this, so PostgreSQL's
archive_command pays a bare Python start, not the whole CLI. See spool.py for the design.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from safehold.pitr.errors import PitrError, SpoolFullError, WalConflictError
from safehold.pitr.walnames import parse_wal_name, read_segment_header, require_wal_name

LOCK_FILE = "pusher.lock"
LOG_FILE = "pusher.log"
STARTING_FILE = "pusher.starting"  # a pusher was started and has not yet taken the lock
_STARTING_FOR = 30.0  # seconds a start-up may take before another start is tried
_TMP_PREFIX = ".tmp-"
DEFAULT_MAX_FILES = 256
CONFLICT_FILE = "CONFLICT"  # written by the pusher: a spooled file clashes with the archive
ACK_DIR = "stored"  # read-ahead: one small file per WAL file already in the repository
ACK_WORDS = {"stored": "stored (read ahead)", "spooled": "spooled", "already": "already spooled"}
ACK_WAIT = 5.0  # how long `wal-push --async` waits for the read-ahead before it copies


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


def require_complete(path: Path) -> int:
    """The size of WAL file `path`; a segment must be exactly as long as its page header says
    (PostgreSQL hands over only complete segments: a shorter one is still being written, or
    was cut short) and raises PitrError otherwise, so the archive_command fails and
    PostgreSQL retries it."""
    parsed = require_wal_name(path.name)
    try:
        with open(path, "rb") as handle:
            head = handle.read(40)
            size = os.fstat(handle.fileno()).st_size
    except OSError as err:
        raise PitrError(
            f"cannot read WAL file {path}: {err.strerror}",
            hint="archive_command passes the path relative to the data folder as %p",
        ) from None
    if parsed.kind != "segment":
        return size
    header = read_segment_header(head)
    if header is None:
        raise PitrError(f"{path} does not start with a WAL page header: not a WAL segment")
    if size != header.segment_size:
        raise PitrError(
            f"{path} is {size} bytes, its header says segments are {header.segment_size}: "
            "refused (a segment still being written, or truncated)",
            hint="a segment is archived only once it is complete: is this the right file?",
        )
    return size


def spool_file(spool: Path, source: Path, max_files: int = DEFAULT_MAX_FILES) -> str:
    """Put `source` into the spool durably. Returns "spooled" or "already" (the same file is
    already waiting); raises WalConflictError for other content, SpoolFullError when full,
    PitrError for a segment shorter than its header says (see require_complete)."""
    name = source.name
    require_complete(source)
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


def pusher_started(spool: Path) -> None:
    """The pusher holds the lock: the next start may be tried (see start_pusher)."""
    with contextlib.suppress(FileNotFoundError):
        (spool / STARTING_FILE).unlink()


def pusher_running(spool: Path) -> bool:
    """Whether a pusher holds the spool's lock right now."""
    try:
        handle = open(spool / LOCK_FILE)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with handle:  # a shared lock for a moment, nothing written: the pid there stays the pusher's
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


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


def start_pusher(
    spool: Path, global_args: list[str], idle_exit: int = 60, wal_dir: Path | None = None
) -> None:
    """Start a pusher for `spool` in the background (its own session, its output appended to
    the spool's log). `global_args` are the options (--plan, -r, ...) it opens the
    repository with; `wal_dir` (the server's pg_wal) turns on the read-ahead. A second
    pusher started by a race finds the lock held and exits."""
    argv = [sys.executable, "-m", "safehold", *global_args, "wal-push", "--daemon",
            "--spool", str(spool), "--idle-exit", str(idle_exit)]  # fmt: skip
    if wal_dir is not None:
        argv += ["--wal-dir", str(wal_dir)]
    marker = spool / STARTING_FILE
    with contextlib.suppress(OSError):  # one start at a time: the CLI takes a second to load
        if time.time() - marker.stat().st_mtime < _STARTING_FOR:
            return
        marker.unlink()
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return  # another archive_command started one just now
    with open(spool / LOG_FILE, "ab") as log:
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
            start_new_session=True, close_fds=True,
        )  # fmt: skip


# ----- read-ahead: the pusher stores the server's ready segments before it asks ---------------
#
# PostgreSQL marks a finished segment pg_wal/archive_status/NAME.ready, then runs the
# archive_command for the oldest one; it keeps (never recycles) the segment until the command
# succeeds. A pusher given the server's pg_wal stores every ready segment straight from there,
# several per batch, and then records it in the spool's `stored/` folder (fsync'd): NAME holds
# the SHA-256, size, inode and modification time of what it stored. `wal-push --async` for a
# recorded segment then only checks that record (a stat; the SHA-256 again if the file was
# touched) and succeeds: the segment is already in the repository, no spool copy is made.


def wal_dir_of(source: Path) -> Path | None:
    """The server's pg_wal folder when `source` is in one (it has archive_status/)."""
    folder = source.absolute().parent
    return folder if (folder / "archive_status").is_dir() else None


def ready_names(wal_dir: Path) -> list[str]:
    """The WAL files the server has finished and not yet seen archived, oldest first."""
    try:
        names = os.listdir(wal_dir / "archive_status")
    except FileNotFoundError:
        return []
    ready = (name[: -len(".ready")] for name in names if name.endswith(".ready"))
    return sorted(name for name in ready if parse_wal_name(name) is not None)


def _identity(info: os.stat_result) -> str:
    return f"{info.st_size} {info.st_ino} {info.st_mtime_ns}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def record_stored(spool: Path, stored: list[tuple[Path, str, os.stat_result]]) -> None:
    """Record (path, sha256, stat taken before it was read) of WAL files now durably in the
    repository, each file written and fsync'd, then the folder fsync'd once."""
    folder = spool / ACK_DIR
    folder.mkdir(exist_ok=True)
    for path, sha256, info in stored:
        tmp = folder / f"{_TMP_PREFIX}{path.name}"
        with open(tmp, "w") as handle:
            handle.write(f"{sha256} {_identity(info)}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, folder / path.name)
    if stored:
        fsync_dir(folder)


def recorded_stored(spool: Path, source: Path) -> bool:
    """Whether the pusher recorded `source` as stored (see record_stored); raises
    WalConflictError when it stored other content under that name."""
    try:
        line = (spool / ACK_DIR / source.name).read_text().split(maxsplit=1)
        info = source.stat()
    except (OSError, ValueError):
        return False
    if len(line) != 2:
        return False
    sha256, identity = line
    if identity.strip() == _identity(info) or _sha256(source) == sha256:
        return True
    raise WalConflictError(
        f"{source.name} is already archived with OTHER content "
        f"(sha256 {sha256[:12]}…, this file is different)"
    )


def wait_stored(spool: Path, source: Path, timeout: float = ACK_WAIT) -> bool:
    """Wait up to `timeout` seconds for the read-ahead to record `source`."""
    deadline = time.monotonic() + timeout
    while not recorded_stored(spool, source):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def forget_stored(spool: Path, wal_dir: Path) -> int:
    """Remove the records of WAL files the server no longer has ready (it saw them archived):
    the folder holds only what the archive_command may still ask about."""
    folder = spool / ACK_DIR
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        if (
            name.startswith(_TMP_PREFIX)
            or not (wal_dir / "archive_status" / f"{name}.ready").exists()
        ):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)
                removed += 1
    return removed


def pusher_reads_ahead(spool: Path, wal_dir: Path) -> bool:
    """Whether a running pusher reads ahead in `wal_dir` (it wrote it into the lock file)."""
    try:
        lines = (spool / LOCK_FILE).read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 2 and lines[1] == str(wal_dir) and pusher_running(spool)


def acknowledge(
    spool: Path,
    source: Path,
    global_args: list[str],
    max_files: int = DEFAULT_MAX_FILES,
    wait: float = ACK_WAIT,
) -> str:
    """`wal-push --async`: "stored" when the read-ahead already stored `source` (or does so
    within `wait` seconds), else "spooled"/"already" from spool_file; starts a pusher when
    none runs. Raises what spool_file raises."""
    wal_dir = wal_dir_of(source)
    conflict = spool / CONFLICT_FILE
    if conflict.exists():
        raise WalConflictError(conflict.read_text(errors="replace").strip().splitlines()[0])
    if wal_dir is not None:
        require_complete(source)
        if recorded_stored(spool, source):
            return "stored"
        spooled = (spool / source.name).exists()  # left to the spool path: no read-ahead
        if not spooled and pusher_reads_ahead(spool, wal_dir) and wait_stored(spool, source, wait):
            return "stored"
    outcome = spool_file(spool, source, max_files)
    if not pusher_running(spool):
        start_pusher(spool, global_args, wal_dir=wal_dir)
    return outcome
