"""Small files read, hashed, compressed and encrypted on worker processes.

A backup of many small files is bound by per-file Python (stat to node, the node's JSON,
open/read/close, the blob's setup), which holds the GIL: threads run it on one core. Forked
workers run it on every core. The walk hands a worker up to `BATCH_FILES` regular files
(of one directory or of several); for each the worker returns the node's JSON (as the tree
will hold it), and it writes the batch's blobs, encoded (compressed and encrypted) exactly as
they go into a pack, back to back into the batch's slot of a shared memory file (a memfd
made before the fork, mapped by the workers): the pipe carries only the nodes and a few
struct-packed bytes per blob (`BLOB_RECORD`), not the data, which the backup process reads
once from the slot into its pack (`pread`: it never maps the slots, so their pages are not
in its resident set as well as in the workers'). The backup process keeps what needs the
whole run's state: dedup against the index and this run, packing, trees, the index and the
snapshot. Workers write nothing to the repository: a crash at any moment leaves it as a
crash of the threaded path does.

A worker hands back (`None`) what the threaded path does better or must do: files above
the single-blob size (chunked), hard links (read once per inode), anything that is no
longer a regular file, and files past the batch's byte budget (bounded memory: the backup
process queues those in a batch of their own).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import multiprocessing
import os
import signal
import stat
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache

from safehold.fs.metadata import group_name, node_from_stat, read_xattrs, stat_times, user_name
from safehold.repo.chunker import CHUNK_MIN
from safehold.repo.crypto import EXTENSION, MasterKey
from safehold.repo.format import encode_json, zstd_compressor
from safehold.repo.gotypes import go_mode_from_stat, go_quote
from safehold.runtime import die_with_parent

SMALL_FILE = CHUNK_MIN  # files up to this size are one blob: no chunker needed
BATCH_FILES = 48  # files per batch
BATCH_BYTES = 2 * 1024 * 1024  # plaintext a worker reads for one batch (memory bound)
# a batch's encoded blobs: a file is read while the batch holds less than BATCH_BYTES, and
# one file is at most SMALL_FILE (a bigger one is handed back); encoding adds EXTENSION
SLOT_BYTES = BATCH_BYTES + SMALL_FILE + BATCH_FILES * EXTENSION
SLOTS_PER_WORKER = 4  # batches in flight per worker (each holds a slot)
# one blob of a batch, in slot order: id (raw SHA-256), stored length, uncompressed length
# (0: stored uncompressed; an empty file has no blob)
BLOB_RECORD = struct.Struct("<32sII")

# A file's outcome: its node's JSON, its size (lstat) and the bytes read (its blob, if any,
# is in the slot); an OSError (the file is skipped and reported); DEFER (past the byte
# budget: queue it again); or None (back up this one on the threaded path).
FileResult = tuple[bytes, int, int] | OSError | str | None
# what a worker returns for a batch: each file's outcome, and the BLOB_RECORDs of its slot
BatchResult = tuple[list[FileResult], bytes]
DEFER = "defer"


@dataclass(frozen=True)
class _Config:
    key: tuple[bytes, bytes, bytes]
    level: int | None  # zstd level; None: no compression (format v1)
    offset: int  # UTC offset of the node times


_master: MasterKey | None = None
_config: _Config | None = None
_region: memoryview | None = None  # the slots, shared with the backup process


def _init_worker(parent: int, config: _Config, slots_fd: int, size: int) -> None:
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the backup process decides how to stop (it
    # keeps the work in flight), its workers finish their batch or die with it. SIGTERM
    # keeps its default: the pool terminates its workers with it when one of them died
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _master, _config, _region
    _master = MasterKey(*config.key)  # fresh key objects: none shared with the parent
    _config = config
    _region = memoryview(mmap.mmap(slots_fd, size))  # MAP_SHARED: the backup process reads it


def read_batch(items: list[tuple[bytes, bytes]], slot: int) -> BatchResult:
    """Back up regular files, each named by (directory, name), their blobs encoded into
    slot `slot` of the shared region (runs on a worker)."""
    master, config, region = _master, _config, _region
    assert master is not None and config is not None and region is not None
    level = config.level
    compressor = zstd_compressor(level) if level is not None else None
    results: list[FileResult] = []
    payloads: list[bytes] = []  # what is encrypted: the compressed data, or the data
    records: list[tuple[bytes, int]] = []  # (raw id, uncompressed length or 0) per payload
    used = 0
    for directory, name in items:
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
            xattrs = read_xattrs(path)
            fd = open_for_reading(path)
            try:
                data = read_small(fd, st.st_size)
            finally:
                os.close(fd)
        except OSError as err:
            results.append(err)
            continue
        if len(data) > SMALL_FILE:  # grew past one blob while read
            results.append(None)
            continue
        used += len(data)
        blob_id = ""
        if data:
            digest = hashlib.sha256(data)
            blob_id = digest.hexdigest()
            payload, uncompressed = data, 0
            if compressor is not None:
                compressed = compressor.compress(data)
                if len(compressed) < len(data):
                    payload, uncompressed = compressed, len(data)
            payloads.append(payload)
            records.append((digest.digest(), uncompressed))
        if xattrs:
            node = node_from_stat(name, path, st, config.offset)
            assert node is not None
            node.content = [blob_id] if blob_id else []
            node_json = encode_json(node.to_json())
        else:
            node_json = file_node_json(name, st, config.offset, blob_id)
        results.append((node_json, st.st_size, len(data)))
    master.encrypt_many_into(payloads, region[slot * SLOT_BYTES : (slot + 1) * SLOT_BYTES])
    pack = BLOB_RECORD.pack
    blobs = b"".join(
        pack(raw, len(payload) + EXTENSION, uncompressed)
        for payload, (raw, uncompressed) in zip(payloads, records, strict=True)
    )
    return results, blobs


def file_node_json(name: bytes, st: os.stat_result, offset: int, blob_id: str) -> bytes:
    """The JSON of a regular file's tree node without extended attributes, as
    `encode_json(node_from_stat(...).to_json())` writes it (the same bytes, fewer steps:
    no Node, no dict, no encoder). `blob_id`: its one blob, or "" when empty."""
    quoted = go_quote(name)
    if quoted.isascii() and '"' not in quoted and "\\" not in quoted:
        name_json = f'"{quoted}"'  # printable ASCII (go_quote saw to it): nothing to escape
    else:
        name_json = _json_string(quoted)
    mode = go_mode_from_stat(st.st_mode)
    mtime, atime, ctime = stat_times(st, offset)
    parts = [f'{{"name":{name_json},"type":"file"']
    if mode:
        parts.append(f',"mode":{mode}')
    parts.append(f',"mtime":"{mtime}","atime":"{atime}","ctime":"{ctime}"')
    parts.append(_owner_json(st.st_uid, st.st_gid))
    if st.st_ino:
        parts.append(f',"inode":{st.st_ino}')
    if st.st_dev:
        parts.append(f',"device_id":{st.st_dev}')
    if st.st_size:
        parts.append(f',"size":{st.st_size}')
    if st.st_nlink:
        parts.append(f',"links":{st.st_nlink}')
    parts.append(f',"content":["{blob_id}"]}}' if blob_id else ',"content":[]}')
    return "".join(parts).encode("utf-8")


@lru_cache(maxsize=1024)
def _owner_json(uid: int, gid: int) -> str:
    """The uid, gid, user and group fields of a node (a few owners per tree: cached)."""
    text = f',"uid":{uid},"gid":{gid}'
    user = user_name(uid)
    if user:
        text += f',"user":{_json_string(user)}'
    group = group_name(gid)
    if group:
        text += f',"group":{_json_string(group)}'
    return text


def _json_string(text: str) -> str:
    return encode_json(text).decode("utf-8")


SlotReader = Callable[[int, int], bytes]  # (start, end) -> those bytes of a batch's slot


class ReaderProcesses:
    """A pool of forked readers for the small files of one backup, and the shared memory
    file of their batches' slots (SLOTS_PER_WORKER per worker: `submit` waits for a free
    one).

    Create it before the backup starts its threads (a fork copies only the forking thread;
    locks other threads hold would stay locked in the child). The workers die with the
    thread that created the pool (see safehold.runtime.die_with_parent)."""

    def __init__(self, pool: ProcessPoolExecutor, slots_fd: int, slots: int) -> None:
        self._pool = pool
        self._fd = slots_fd
        self._free = list(range(slots))
        self._freed = threading.Condition()
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
        slots = SLOTS_PER_WORKER * workers
        try:
            # a memory-backed file, gone with the last process that has it open or mapped;
            # untouched pages cost no memory
            fd = os.memfd_create("safehold-slots", os.MFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        try:
            os.ftruncate(fd, slots * SLOT_BYTES)
            pool = ProcessPoolExecutor(
                workers,
                multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(os.getpid(), config, fd, slots * SLOT_BYTES),
            )
        except (OSError, ValueError):
            os.close(fd)
            return None
        try:
            pool.submit(int).result()  # fork every worker now, before any thread starts
        except (OSError, BrokenProcessPool):
            pool.shutdown(wait=True, cancel_futures=True)
            os.close(fd)
            return None
        return cls(pool, fd, slots)

    def submit(
        self,
        items: list[tuple[bytes, bytes]],
        done: Callable[[Future[BatchResult], SlotReader], None],
    ) -> None:
        """Read a batch on a worker (waits for a free slot); `done(future, read)` runs when
        it came back, on the pool's thread: `read(start, end)` gives bytes of the batch's
        encoded blobs until `done` returns (the slot is reused then)."""
        with self._freed:
            while not self._free:
                self._freed.wait()
            slot = self._free.pop()
        base = slot * SLOT_BYTES
        fd = self._fd

        def read(start: int, end: int) -> bytes:
            if not 0 <= start <= end <= SLOT_BYTES:
                raise ValueError("outside the slot")
            data = os.pread(fd, end - start, base + start)
            if len(data) != end - start:
                raise OSError(errno.EIO, "short read from the slots")
            return data

        def finished(future: Future[BatchResult]) -> None:
            try:
                done(future, read)
            finally:
                self._release(slot)

        try:
            future = self._pool.submit(read_batch, items, slot)
        except BaseException:
            self._release(slot)
            raise
        future.add_done_callback(finished)

    def _release(self, slot: int) -> None:
        with self._freed:
            self._free.append(slot)
            self._freed.notify()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        os.close(self._fd)


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


def read_small(fd: int, size: int) -> bytes:
    """A small file's bytes, `size` its length by lstat: one read of `size + 1` bytes (not
    of SMALL_FILE + 1: a 512 KiB buffer per file costs an mmap and munmap each), then to
    the end of the file or past SMALL_FILE if it grew since."""
    data = read_up_to(fd, size + 1)
    if len(data) <= size or size >= SMALL_FILE:
        return data
    return data + read_up_to(fd, SMALL_FILE + 1 - len(data))


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
