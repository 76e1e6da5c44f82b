"""Small files read, hashed, compressed and encrypted on worker processes.

A backup of many small files is bound by per-file Python (stat to node, the node's JSON,
open/read/close, the blob's setup), which holds the GIL: threads run it on one core. Forked
workers run it on every core. The walk hands a worker the names of up to `BATCH_FILES`
regular files of one directory; for each the worker returns the node's JSON (as the tree
will hold it) and the blob, encoded (compressed and encrypted) as it goes into a pack. The
backup process keeps what needs the whole run's state: dedup against the index and this
run, packing, trees, the index and the snapshot. Workers write nothing: a crash at any
moment leaves the repository as a crash of the threaded path does.

A worker hands back (`None`) what the threaded path does better or must do: files above
the single-blob size (chunked), hard links (read once per inode), anything that is no
longer a regular file, and files past the batch's byte budget (bounded memory: the backup
process queues those in a batch of their own).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import stat
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from safehold.fs.metadata import node_from_stat
from safehold.repo.chunker import CHUNK_MIN
from safehold.repo.crypto import MasterKey
from safehold.repo.format import encode_json
from safehold.repo.pack import BlobType, encode_blob
from safehold.runtime import die_with_parent

SMALL_FILE = CHUNK_MIN  # files up to this size are one blob: no chunker needed
BATCH_FILES = 32  # names per batch
BATCH_BYTES = 4 * 1024 * 1024  # plaintext a worker reads for one batch (memory bound)

# A file's outcome: its node's JSON, its size (lstat), the bytes read and, when it has data,
# (blob id, encoded blob, uncompressed length or None) - the encoded blob is dropped once
# packed; an OSError (the file is skipped and reported); DEFER (past the byte budget: queue
# it again); or None (back up this one on the threaded path).
Encoded = tuple[str, bytes, int | None]
FileResult = tuple[bytes, int, int, Encoded | None] | OSError | str | None
DEFER = "defer"


@dataclass(frozen=True)
class _Config:
    key: tuple[bytes, bytes, bytes]
    level: int | None  # zstd level; None: no compression (format v1)
    offset: int  # UTC offset of the node times


_master: MasterKey | None = None
_config: _Config | None = None


def _init_worker(parent: int, config: _Config) -> None:
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the backup process decides how to stop (it
    # keeps the work in flight), its workers finish their batch or die with it. SIGTERM
    # keeps its default: the pool terminates its workers with it when one of them died
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _master, _config
    _master = MasterKey(*config.key)  # fresh key objects: none shared with the parent
    _config = config


def read_batch(directory: bytes, names: list[bytes]) -> list[FileResult]:
    """Back up the regular files `names` of `directory` (runs on a worker)."""
    master, config = _master, _config
    assert master is not None and config is not None
    results: list[FileResult] = []
    used = 0
    for name in names:
        if used >= BATCH_BYTES:
            results.append(DEFER)
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > SMALL_FILE or st.st_nlink > 1:
                results.append(None)
                continue
            if used and used + st.st_size > BATCH_BYTES:
                results.append(DEFER)
                continue
            node = node_from_stat(name, path, st, config.offset)
            fd = open_for_reading(path)
            try:
                data = read_up_to(fd, SMALL_FILE + 1)
            finally:
                os.close(fd)
        except OSError as err:
            results.append(err)
            continue
        if node is None or len(data) > SMALL_FILE:  # grew past one blob while read
            results.append(None)
            continue
        used += len(data)
        value = node.to_json()
        encoded: Encoded | None = None
        if data:
            blob_id = hashlib.sha256(data).hexdigest()
            value["content"] = [blob_id]
            blob = encode_blob(master, blob_id, BlobType.DATA, data, config.level)
            encoded = (blob_id, blob.data, blob.uncompressed_length)
        results.append((encode_json(value), st.st_size, len(data), encoded))
    return results


class ReaderProcesses:
    """A pool of forked readers for the small files of one backup.

    Create it before the backup starts its threads (a fork copies only the forking thread;
    locks other threads hold would stay locked in the child). The workers die with the
    thread that created the pool (see safehold.runtime.die_with_parent)."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool
        self.broken = False

    @classmethod
    def start(
        cls, workers: int, master: MasterKey, level: int | None, offset: int
    ) -> ReaderProcesses | None:
        """The pool, its workers forked now; None where it cannot run (not Linux, or the
        fork failed): the backup then reads on threads."""
        if workers < 1 or not sys.platform.startswith("linux"):
            return None
        config = _Config((master.encrypt, master.mac_k, master.mac_r), level, offset)
        try:
            pool = ProcessPoolExecutor(
                workers,
                multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(os.getpid(), config),
            )
        except (OSError, ValueError):
            return None
        try:
            pool.submit(int).result()  # fork every worker now, before any thread starts
        except (OSError, BrokenProcessPool):
            pool.shutdown(wait=True, cancel_futures=True)
            return None
        return cls(pool)

    def submit(
        self,
        directory: bytes,
        names: list[bytes],
        done: Callable[[Future[list[FileResult]]], None],
    ) -> None:
        future = self._pool.submit(read_batch, directory, names)
        future.add_done_callback(done)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_NOATIME = getattr(os, "O_NOATIME", 0)


def open_for_reading(path: bytes) -> int:
    """A file descriptor to read a file being backed up. On Linux with O_NOATIME when the
    kernel allows it (the file's owner, or root): the backup does not change the files'
    access times, and reading a file written since its last read costs no inode update
    (one journal write per file under relatime). Elsewhere, or for other users' files, a
    plain read-only open."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME)
        except OSError:
            pass  # EPERM: not the owner (or a filesystem that refuses it): the plain open
            # below says whether the file can be read at all
    return os.open(path, flags)


def read_up_to(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from the start of `fd` (fewer only at the end of the file)."""
    data = os.read(fd, limit)
    if not data or len(data) == limit:
        return data
    parts = [data]
    got = len(data)
    while got < limit:
        more = os.read(fd, limit - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
