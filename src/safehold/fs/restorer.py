"""Restore a snapshot (or part of it) into a directory.

The snapshot is walked first: directories and special files are created, and every file's
content is planned blob by blob. The blobs are then grouped by the pack that holds them and
a thread pool works through the packs, each reading the needed blobs in a few large reads,
decrypting, decompressing and verifying every blob against its id once, and writing it to
every place that uses it (duplicate files cost one decode). Blobs of zeros become holes
(sparse files keep their shape). Each file is written under a temporary name in its folder,
its metadata is set on the open file, and it is renamed into place once all its content is
written and verified, so a file that fails leaves nothing under its name. A damaged blob
fails only the files that use it (after trying any other copy of it): they are reported, the
rest is restored. Directory metadata is applied last, deepest first, so writing into a
directory does not disturb its restored mtime.

From a local repository, once the walk has planned more than a few files, the content is
written by forked worker processes while the walk goes on (`_PackWorkers`): a pack the walk
has moved past is handed to a worker, which reads, decodes, verifies and writes its blobs and
finishes every file all of whose blobs it wrote (metadata, rename). A file whose blobs another
job writes too is created by the walk and finished by it once every job has reported. The walk
and the decoding then run on separate cores with no GIL between them (threads were measured
slower: the walk held the GIL every worker waited for). A worker that dies loses only its
jobs: they are run again in this process, over whatever temporary file it left, and nothing
is ever renamed before all of its content was written.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import secrets
import signal
import stat
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from safehold.errors import (
    IntegrityError,
    LockLostError,
    MissingObjectError,
    SafeholdError,
    TargetNotEmptyError,
    UsageError,
)
from safehold.fs.metadata import apply_file_metadata, apply_metadata
from safehold.repo.gotypes import GoTime
from safehold.repo.index import BlobLocation
from safehold.repo.pack import BlobType, PackedBlob
from safehold.repo.packcache import PackCache
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node
from safehold.repo.walk import find_node
from safehold.runtime import die_with_parent, keep_freed_heap


@dataclass
class RestoreOptions:
    includes: list[str] = field(default_factory=list)
    force: bool = False
    workers: int = 3
    sparse: bool = True
    verify: bool = False
    cache_bytes: int = 16 * 1024 * 1024
    root: str | None = None  # restore the contents of this snapshot folder into the target
    # Restore only these paths (relative to the root, '/'-joined; a folder: all under it),
    # leaving everything else in the target as it is: folders that exist already keep their
    # metadata. None: everything (or `includes`).
    only: frozenset[str] | None = None


@dataclass
class RestoreStats:
    files: int = 0
    files_total: int = 0  # the files the snapshot (or the chosen part) holds
    dirs: int = 0
    others: int = 0
    sockets_skipped: int = 0  # recorded in the snapshot, never restored (as restic)
    bytes_written: int = 0
    bytes_total: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def _normalize_include(path: str) -> tuple[bytes, ...]:
    return tuple(part for part in os.fsencode(path).split(b"/") if part and part != b".")


def target_problem(target: str | bytes, *, force: bool) -> SafeholdError | None:
    """Why files cannot be restored into `target`, or None: a restore goes into a new or empty
    folder, or into a non-empty one only with `force`. Looks, changes nothing."""
    path = os.fsencode(os.path.abspath(target))
    if os.path.isdir(path):
        if os.listdir(path) and not force:
            return TargetNotEmptyError(f"restore target {os.fsdecode(path)} is not empty")
        return None
    if os.path.lexists(path):
        return UsageError(f"restore target {os.fsdecode(path)} exists and is not a folder")
    return None


_READ_SPAN = 4 * 1024 * 1024  # the most one local read takes from a pack (one blob may be more)
_READ_GAP = 256 * 1024  # blobs this close are read together, the gap between them discarded
# Worker processes start once the walk has planned this many files or bytes (a small restore
# is not worth a fork). A pack's planned blobs go to them as one job once they add up to
# `_JOB_BYTES` (stored), or once the walk has planned `_STALE_FILES` files without touching
# the pack (a backup writes files to several packs at once, so the walk's order jumps
# between packs; a later file may still need a pack handed over: it gets a job of its own).
_FORK_AFTER_FILES = 64
_FORK_AFTER_BYTES = 16 * 1024 * 1024
_JOB_BYTES = 4 * 1024 * 1024
_STALE_FILES = 256


class _File:
    """A file being restored: where it goes, its temporary name, how many blob writes are
    left, and the first error (once set, nothing more is written and it is not renamed)."""

    __slots__ = (
        "created", "error", "finish", "holes", "lock", "node", "path", "remaining", "shared",
        "temp", "unsent",
    )  # fmt: skip

    def __init__(self, path: bytes, node: Node, blobs: int, temp: bytes) -> None:
        self.path = path
        self.node = node
        self.temp = temp
        self.remaining = blobs
        self.unsent = blobs  # blob writes not yet handed to a worker process
        self.error: Exception | None = None
        self.created = False
        self.holes = False
        self.finish = True  # False: a worker's part of a file the parent process finishes
        self.shared = False  # its blobs went to more than one worker job
        self.lock = threading.Lock() if blobs > 1 else None  # guards creating the temp file


class _Planned:
    """One blob of one pack, and every (file, offset) that needs its plaintext."""

    __slots__ = ("blob", "targets")

    def __init__(self, blob: PackedBlob) -> None:
        self.blob = blob
        self.targets: list[tuple[_File, int]] = []


def _runs(blobs: list[_Planned], span: int, gap: int) -> Iterator[list[_Planned]]:
    """Blobs (sorted by offset) in groups that one read of at most `span` bytes covers."""
    run: list[_Planned] = []
    start = end = 0
    for planned in blobs:
        blob = planned.blob
        if run and (blob.offset - end > gap or blob.offset + blob.length - start > span):
            yield run
            run = []
        if not run:
            start = blob.offset
        run.append(planned)
        end = max(end, blob.offset + blob.length)
    if run:
        yield run


def _is_zero(data: bytes) -> bool:
    return bool(data) and data[0] == 0 and data[-1] == 0 and data.count(0) == len(data)


class Restorer:
    def __init__(
        self,
        repo: Repository,
        options: RestoreOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.repo = repo
        self.options = options or RestoreOptions()
        self.progress = progress
        self.stats = RestoreStats()
        self._includes = [_normalize_include(path) for path in self.options.includes]
        self._only: set[tuple[bytes, ...]] | None = None
        self._only_parents: set[tuple[bytes, ...]] = set()
        if self.options.only is not None:
            self._only = {_normalize_include(path) for path in self.options.only}
            for chosen in self._only:
                self._only_parents.update(chosen[:end] for end in range(1, len(chosen)))
        self._packs: dict[str, dict[str, _Planned]] = {}  # by the walk's last use, oldest first
        self._pack_bytes: dict[str, int] = {}  # stored bytes planned, of the packs in _packs
        self._pack_touched: dict[str, int] = {}  # the file (files_total) that used it last
        self._full_packs: list[str] = []  # in _packs with _JOB_BYTES planned: a job each
        self._locations: dict[str, BlobLocation | None] = {}
        self._hardlinks: dict[tuple[int, int], _File] = {}
        self._links: list[tuple[bytes, Node, _File]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._fresh = False  # the target was new or empty: nothing to replace in it
        self._last_path = b""
        self._restore_owner = os.geteuid() == 0
        # Temporary names: one random part per restore (another restore into the same folder
        # picks another; O_EXCL refuses any clash), then a counter (no urandom per file).
        self._temp_prefix = b".safehold-restore-" + secrets.token_hex(6).encode() + b"-"
        self._temp_count = 0
        # A new file already has this process's owner: its fchown is skipped when the node
        # has that owner too, but only where no folder passes its group down (setgid).
        self._own_owner: tuple[int, int] | None = None
        self._workers: _PackWorkers | None = None
        self._may_fork = True  # False: SFTP (not forkable), or the worker processes broke
        self._retry = False  # re-running a dead worker's jobs: its temp files may exist
        # jobs handed to the workers, oldest first: (future, pack, its blobs, the job's files,
        # (slot, blob writes) of each shared file)
        self._inflight: deque[_InFlight] = deque()
        self._failed: list[tuple[str, dict[str, _Planned]]] = []  # lost with a dead worker

    def restore(self, snapshot: Snapshot, target: str) -> RestoreStats:
        target_path = os.fsencode(os.path.abspath(target))
        self.repo.index  # noqa: B018  (an unreadable index fails the restore, not each tree)
        self._prepare_target(target_path)
        matched = [False] * len(self._includes)
        dirs: list[tuple[bytes, Node]] = []
        # On remote storage every tree would be a request of its own, one after the other
        # (S3: ~10 ms each): the walk reads whole packs of trees once instead.
        remote = self.repo.backend.capabilities.local_path is None
        # Forked workers read through their copy of the backend, which makes connections of
        # its own (after_fork); a backend whose connections are dear (SFTP) is read on threads.
        forkable = self.repo.backend.capabilities.forkable
        self._may_fork = forkable and sys.platform.startswith("linux")
        own_cache = remote and self.repo.pack_cache is None
        if own_cache:
            self.repo.pack_cache = PackCache(self.repo.backend)
        try:
            for path, node, relative in self._walk(self._root_tree(snapshot), target_path, ()):
                for number, include in enumerate(self._includes):
                    if relative[: len(include)] == include:
                        matched[number] = True
                if self._only is not None and relative in self._only_parents \
                        and not self._under_only(relative):  # fmt: skip
                    os.makedirs(path, mode=0o700, exist_ok=True)  # kept as it is when there
                    continue
                self._create(path, node, dirs)
                if node.type == "file" and self._may_fork:
                    self._hand_over(final=False)
            if self._workers is not None:
                self._hand_over(final=True)
                self._collect(wait=True)
        finally:
            if own_cache:
                self.repo.pack_cache = None  # data packs are read in runs, not cached
            if self._workers is not None:
                self._workers.shutdown()
                self._workers = None
        self._restore_contents()
        for path, node, first in self._links:
            self._link(path, node, first)
        for path, node in reversed(dirs):
            self._apply(path, node)
        for number, found in enumerate(matched):
            if not found:
                raise UsageError(
                    f"--include {self.options.includes[number]} matches nothing in the snapshot",
                    hint=f"list the snapshot with `safehold ls {snapshot.short_id}`",
                )
        return self.stats

    def _root_tree(self, snapshot: Snapshot) -> str:
        if not self.options.root or not self.options.root.strip("/"):
            return snapshot.tree
        node, subtree = find_node(self.repo, snapshot.tree, self.options.root)
        if node is None or subtree is None:
            raise UsageError(
                f"{self.options.root} is not a folder in snapshot {snapshot.short_id}",
                hint=f"list it with `safehold ls {snapshot.short_id}`",
            )
        return subtree

    def _prepare_target(self, target: bytes) -> None:
        problem = target_problem(target, force=self.options.force)
        if problem is not None:
            raise problem
        if not os.path.isdir(target):
            os.makedirs(target, mode=0o700)
            self._fresh = True
        else:
            self._fresh = not os.listdir(target)
        if self._fresh and not os.stat(target).st_mode & stat.S_ISGID:
            # every folder below is made here (0o700, no setgid until its metadata comes last)
            self._own_owner = (os.geteuid(), os.getegid())

    def _under_only(self, relative: tuple[bytes, ...]) -> bool:
        assert self._only is not None
        return any(relative[:end] in self._only for end in range(1, len(relative) + 1))

    def _selected(self, relative: tuple[bytes, ...]) -> bool:
        if self._only is not None:
            return relative in self._only_parents or self._under_only(relative)
        if not self._includes:
            return True
        return any(
            relative[: len(inc)] == inc or inc[: len(relative)] == relative
            for inc in self._includes
        )

    def _walk(
        self, tree_id: str, directory: bytes, relative: tuple[bytes, ...]
    ) -> Iterator[tuple[bytes, Node, tuple[bytes, ...]]]:
        try:
            nodes = self.repo.load_tree(tree_id)
        except SafeholdError as err:
            self._fail(directory, err)
            return
        for node in nodes:
            if node.name in (b"", b".", b"..") or b"/" in node.name:
                self._fail(directory, UsageError(f"unsafe name {node.name!r} in snapshot"))
                continue
            child_relative = (*relative, node.name)
            if not self._selected(child_relative):
                continue
            path = os.path.join(directory, node.name)
            yield path, node, child_relative
            if node.type == "dir" and node.subtree:
                yield from self._walk(node.subtree, path, child_relative)

    def _create(self, path: bytes, node: Node, dirs: list[tuple[bytes, Node]]) -> None:
        try:
            if node.type == "dir":
                _make_dir(path)
                dirs.append((path, node))
                self.stats.dirs += 1
                return
            if node.type == "socket":
                # restic records sockets and skips them on restore: a socket is created by the
                # server that listens on it, and nothing can be written into one.
                self.stats.sockets_skipped += 1
                return
            if not self._fresh and os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)
            if node.type == "file":
                self._plan_file(path, node)
                return
            self._create_special(path, node)
            self.stats.others += 1
            self._apply(path, node)
        except (SafeholdError, OSError) as err:
            self._fail(path, err)

    def _plan_file(self, path: bytes, node: Node) -> None:
        """Note which blobs the file needs and where they go; the pool writes them."""
        self.stats.files_total += 1
        key = (node.device_id, node.inode)
        if node.links > 1 and node.inode:
            first = self._hardlinks.get(key)
            if first is not None:
                self._links.append((path, node, first))  # linked once the first is in place
                return
        content = node.content or []
        self._temp_count += 1
        temp = os.path.join(os.path.dirname(path), b"%s%d" % (self._temp_prefix, self._temp_count))
        file = _File(path, node, len(content), temp)
        if node.links > 1 and node.inode:
            self._hardlinks[key] = file
        self.stats.bytes_total += node.size
        places: list[tuple[BlobLocation, int]] = []
        position = 0
        for blob_id in content:
            location = self._locate(blob_id)
            if location is None:
                file.error = MissingObjectError(f"blob {blob_id[:8]} is not in the index")
                break
            places.append((location, position))
            position += location.blob.plaintext_length
        if file.error is None and position != node.size:
            file.error = UsageError(
                f"restored size {position} differs from the recorded size {node.size}"
            )
        if file.error is not None:
            self._fail(path, file.error)
            return
        if not content:
            self._put(file, 0, b"", None)
            return
        packs, sizes, touched = self._packs, self._pack_bytes, self._pack_touched
        number = self.stats.files_total
        for location, offset in places:
            pack_id = location.pack_id
            blobs = packs.pop(pack_id, None)  # (re)inserted last: used last
            if blobs is None:
                blobs = {}
                sizes[pack_id] = 0
            packs[pack_id] = blobs
            touched[pack_id] = number
            planned = blobs.get(location.blob.id)
            if planned is None:
                planned = blobs[location.blob.id] = _Planned(location.blob)
                sizes[pack_id] += location.blob.length
                if sizes[pack_id] >= _JOB_BYTES:
                    self._full_packs.append(pack_id)
            planned.targets.append((file, offset))

    def _locate(self, blob_id: str) -> BlobLocation | None:
        """The first data copy of the blob in the index (others are tried if it is damaged)."""
        if blob_id in self._locations:
            return self._locations[blob_id]
        found = None
        for location in self.repo.index.all_locations(blob_id):
            if location.blob.type is BlobType.DATA:
                found = location
                break
        self._locations[blob_id] = found
        return found

    def _create_special(self, path: bytes, node: Node) -> None:
        if node.type == "symlink":
            os.symlink(node.linktarget, path)
        elif node.type == "fifo":
            os.mkfifo(path, 0o600)
        elif node.type in ("dev", "chardev"):
            kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
            os.mknod(path, 0o600 | kind, node.device)
        else:
            raise UsageError(f"unknown node type {node.type!r}")

    # ----- contents, pack by pack --------------------------------------------------------

    def _span(self) -> tuple[int, int]:
        remote = self.repo.backend.capabilities.local_path is None
        # remote storage: one request per pack; local: a few MiB per read bound the memory
        return (1 << 62, 1 << 62) if remote else (_READ_SPAN, _READ_GAP)

    def _restore_contents(self) -> None:
        """Write the packs no worker process wrote, on threads: all of them for a small or
        remote restore; what is left, and any job lost with a worker, after a worker died."""
        span, gap = self._span()
        packs = [*self._packs.items(), *self._failed]
        self._retry = self._retry or bool(self._failed)
        self._packs, self._failed = {}, []
        if not packs:
            return
        with ThreadPoolExecutor(max(1, self.options.workers), "restore") as pool:
            futures = [
                pool.submit(self._restore_pack, pack_id, blobs, span, gap)
                for pack_id, blobs in packs
            ]
            try:
                for future in as_completed(futures):
                    future.result()
                    self._report()
            except BaseException:
                self._stop = True  # e.g. the lock was lost: the workers stop at their next read
                raise

    # ----- contents on worker processes ------------------------------------------------

    def _hand_over(self, *, final: bool) -> None:
        """Hand the packs that are ready to the worker processes (all of them when the walk is
        `final`), which start once the walk has planned enough to be worth a fork."""
        packs = self._packs
        if not packs or not self._may_fork:
            return
        stats = self.stats
        if self._workers is None:
            if final:
                return  # the walk planned too little: threads write it
            if stats.files_total < _FORK_AFTER_FILES and stats.bytes_total < _FORK_AFTER_BYTES:
                return
            count = max(1, min(self.options.workers, os.cpu_count() or 1))
            self._workers = _PackWorkers.start(self, count)
            if self._workers is None:
                self._may_fork = False
                return
        ready = list(packs) if final else self._full_packs
        stale = stats.files_total - _STALE_FILES
        if not final:
            touched = self._pack_touched
            for pack_id in packs:  # oldest use first
                if touched[pack_id] > stale:
                    break
                ready.append(pack_id)
        for pack_id in ready:
            blobs = packs.get(pack_id)
            if blobs is None:
                continue  # listed twice
            if not self._submit(pack_id, blobs):
                self._may_fork = False  # the pool broke: what is left goes to threads
                break
            del packs[pack_id], self._pack_bytes[pack_id], self._pack_touched[pack_id]
        self._full_packs = []
        self._collect(wait=False)

    def _submit(self, pack_id: str, blobs: dict[str, _Planned]) -> bool:
        assert self._workers is not None
        slots: dict[int, int] = {}
        files: list[_File] = []
        counts: list[int] = []
        job_blobs: list[_JobBlob] = []
        for planned in blobs.values():
            targets: list[tuple[int, int]] = []
            for file, offset in planned.targets:
                slot = slots.get(id(file))
                if slot is None:
                    slot = slots[id(file)] = len(files)
                    files.append(file)
                    counts.append(0)
                counts[slot] += 1
                targets.append((slot, offset))
            blob = planned.blob
            job_blobs.append(
                (blob.id, blob.offset, blob.length, blob.uncompressed_length or 0, targets)
            )
        job_files: list[_JobFile] = []
        shared: list[tuple[int, int]] = []
        for slot, file in enumerate(files):
            count = counts[slot]
            whole = not file.shared and count == file.unsent  # all its blobs: the worker's
            file.unsent -= count
            if not whole:
                file.shared = True
                shared.append((slot, count))
                if not file.created:  # made here, so that every worker opens the same file
                    try:
                        os.close(self._open(file))
                    except OSError as err:
                        file.error = file.error or err
            job_files.append(
                (file.path, file.temp, _file_meta(file.node), count, file.created, whole)
            )
        span, gap = self._span()
        try:
            future = self._workers.submit((pack_id, job_blobs, job_files, span, gap))
        except (BrokenProcessPool, RuntimeError):
            for slot, count in shared:  # not sent after all
                files[slot].unsent += count
            return False
        self._inflight.append((future, pack_id, blobs, files, shared))
        return True

    def _collect(self, *, wait: bool) -> None:
        """Take in the results of the jobs done (all of them with `wait`), oldest first."""
        inflight = self._inflight
        while inflight and (wait or inflight[0][0].done()):
            future, pack_id, blobs, files, shared = inflight.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                # A worker died (killed, out of memory): its jobs, and those of the others
                # the pool stopped with it, run again on threads; nothing of theirs was
                # renamed unless it was complete.
                for slot, count in shared:
                    files[slot].unsent += count
                self._failed.append((pack_id, blobs))
                self._may_fork = False
                continue
            self._absorb(result, files, shared)
            self.repo.check_lock()
            self._report()

    def _absorb(
        self, result: _JobResult, files: list[_File], shared: list[tuple[int, int]]
    ) -> None:
        written, finished, errors, warnings, failed, holes, decoded, last_path = result
        stats = self.stats
        stats.bytes_written += written
        stats.files += finished
        stats.errors.extend(errors)
        stats.warnings.extend(warnings)
        if last_path:
            self._last_path = last_path
        if decoded:
            self.repo.report_data_read(decoded)
        for slot, message in failed.items():
            if files[slot].error is None:  # hard links to it fail with its reason
                files[slot].error = SafeholdError(message)
        for slot, count in shared:
            file = files[slot]
            file.holes = file.holes or slot in holes
            file.remaining -= count
            if file.remaining <= 0:
                self._settle(file, -1, True, file.error)

    def _run_job(self, job: _Job) -> _JobResult:
        """Write one job's blobs (in a worker process)."""
        pack_id, job_blobs, job_files, span, gap = job
        self.stats = stats = RestoreStats()
        self._last_path = b""
        files: list[_File] = []
        for path, temp, meta, count, created, whole in job_files:
            file = _File(path, _meta_node(meta), count, temp)
            file.created = created
            file.finish = whole
            files.append(file)
        blobs: dict[str, _Planned] = {}
        for blob_id, offset, length, uncompressed, targets in job_blobs:
            blob = PackedBlob(blob_id, BlobType.DATA, offset, length, uncompressed or None)
            planned = blobs[blob_id] = _Planned(blob)
            planned.targets = [(files[slot], offset) for slot, offset in targets]
        decoded = [0]

        def add(size: int) -> None:
            decoded[0] += size

        with self.repo.observe_data_reads(add):
            self._restore_pack(pack_id, blobs, span, gap)
        failed = {
            slot: _message(file.error) for slot, file in enumerate(files) if file.error is not None
        }
        holes = {slot for slot, file in enumerate(files) if file.holes and not file.finish}
        return (stats.bytes_written, stats.files, stats.errors, stats.warnings, failed, holes,
                decoded[0], self._last_path)  # fmt: skip

    def _restore_pack(self, pack_id: str, blobs: dict[str, _Planned], span: int, gap: int) -> None:
        ordered = sorted(blobs.values(), key=lambda planned: planned.blob.offset)
        for run in _runs(ordered, span, gap):
            if self._stop:
                return
            start = run[0].blob.offset
            end = max(planned.blob.offset + planned.blob.length for planned in run)
            first = run[0].blob
            raw: memoryview | None = None
            read_error: SafeholdError | None = None
            try:
                span_blob = PackedBlob(first.id, first.type, start, end - start, None)
                raw = memoryview(self.repo.read_blob_raw(pack_id, span_blob))
            except (IntegrityError, MissingObjectError) as err:
                read_error = err
            for planned in run:
                self._deliver(pack_id, planned, raw, start, read_error)

    def _deliver(
        self,
        pack_id: str,
        planned: _Planned,
        raw: memoryview | None,
        start: int,
        error: SafeholdError | None,
    ) -> None:
        blob = planned.blob
        plaintext: bytes | None = None
        if raw is not None:
            stored = raw[blob.offset - start : blob.offset - start + blob.length]
            try:
                plaintext = self.repo.decode_blob_checked(pack_id, blob, stored)
            except IntegrityError as err:
                error = err
        if plaintext is None:
            try:  # any other copy of it in the index
                plaintext = self.repo.load_blob(blob.id, BlobType.DATA)
            except (IntegrityError, MissingObjectError) as err:
                error = error or err
        if plaintext is not None:
            error = None
            if self.options.sparse and _is_zero(plaintext):
                plaintext = None  # a hole
        for file, offset in planned.targets:
            self._put(file, offset, plaintext, error)

    def _put(self, file: _File, offset: int, data: bytes | None, error: Exception | None) -> None:
        """Write one blob's plaintext (None: a hole) at `offset` of the file; the last blob
        of a file sets its metadata and renames it into place."""
        fd = -1
        written = 0
        try:
            if error is None and file.error is None:
                fd = self._open(file)
                if data is None:
                    file.holes = True
                else:
                    _pwrite_all(fd, data, offset)
                    written = len(data)
        except OSError as err:
            error = err
        with self._lock:
            self.stats.bytes_written += written
            if error is not None and file.error is None:
                file.error = error
            file.remaining -= 1
            last = file.remaining <= 0
            failed = file.error
        self._settle(file, fd, last, failed)

    def _settle(self, file: _File, fd: int, last: bool, failed: Exception | None) -> None:
        """Close `fd` (when open); after the file's last write, set its metadata and rename
        it into place, or remove its temporary file when it failed."""
        if last and not file.finish:  # a worker's part: the parent process finishes it
            if fd >= 0:
                os.close(fd)
            return
        try:
            if last and failed is None:
                if fd < 0:
                    fd = self._open(file)
                self._finish(file, fd)
        except OSError as err:
            failed = err
        finally:
            if fd >= 0:
                os.close(fd)
        if last:
            if failed is None:
                try:
                    os.rename(file.temp, file.path)
                except OSError as err:
                    failed = err
            if failed is not None:
                if file.created or self._retry:  # a dead worker may have created it
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(file.temp)
                self._fail(file.path, failed)
            else:
                with self._lock:
                    self.stats.files += 1
                    self._last_path = file.path
                self._report()  # per file, so progress moves within a large pack too

    def _open(self, file: _File) -> int:
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        if not file.created:
            # O_EXCL refuses another restore's file; a dead worker's is this restore's own
            create = os.O_CREAT | (0 if self._retry else os.O_EXCL)
            with file.lock or contextlib.nullcontext():  # one blob: no other writer
                if not file.created:
                    fd = os.open(file.temp, flags | create, 0o600)
                    file.created = True
                    return fd
        return os.open(file.temp, flags)

    def _finish(self, file: _File, fd: int) -> None:
        if file.holes:
            os.ftruncate(fd, file.node.size)
        node = file.node
        restore_owner = self._restore_owner and (node.uid, node.gid) != self._own_owner
        warnings = apply_file_metadata(fd, node, restore_owner=restore_owner)
        if warnings:
            with self._lock:
                name = os.fsdecode(file.path)
                self.stats.warnings.extend((name, warning) for warning in warnings)

    def _link(self, path: bytes, node: Node, first: _File) -> None:
        if first.error is not None:
            self._fail(path, first.error)
            return
        try:
            os.link(first.path, path)
        except OSError as err:
            self._fail(path, err)
            return
        self.stats.files += 1

    def _report(self) -> None:
        if self.progress is not None:
            stats = self.stats
            total = stats.bytes_total or None
            self.progress(
                Progress("restore", stats.bytes_written, total, "bytes", stats.files,
                         os.fsdecode(self._last_path))
            )  # fmt: skip

    def _apply(self, path: bytes, node: Node) -> None:
        try:
            for warning in apply_metadata(path, node, restore_owner=self._restore_owner):
                self.stats.warnings.append((os.fsdecode(path), warning))
        except OSError as err:
            self._fail(path, err)

    def _fail(self, path: bytes, err: Exception) -> None:
        if isinstance(err, LockLostError):
            raise err  # the whole restore stops, not just this file
        with self._lock:
            self.stats.errors.append((os.fsdecode(path), _message(err)))


def _message(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


# A job for a worker process, in plain tuples (pickled for the pipe: a Node with its content
# list, or a PackedBlob, costs several times as much to pickle and unpickle): a pack, its data
# blobs (id, offset, length, uncompressed length or 0, (file slot, offset) of each write),
# the files (path, temporary path, metadata, blob writes in this job, temp file made already,
# the worker finishes it), the read span and gap.
_JobBlob = tuple[str, int, int, int, list[tuple[int, int]]]
# what a worker sets on a file it finishes: mode, uid, gid, atime ns, mtime ns, size, xattrs
_FileMeta = tuple[int, int, int, int, int, int, list[tuple[str, bytes]]]
_JobFile = tuple[bytes, bytes, _FileMeta, int, bool, bool]
_Job = tuple[str, list[_JobBlob], list[_JobFile], int, int]
# bytes written, files finished, errors, warnings, {slot: error} of the files that failed,
# slots of shared files with holes, data bytes decoded, the last file finished
_JobResult = tuple[
    int, int, list[tuple[str, str]], list[tuple[str, str]], dict[int, str], set[int], int, bytes
]
_InFlight = tuple[
    "Future[_JobResult]", str, dict[str, _Planned], list[_File], list[tuple[int, int]]
]


def _file_meta(node: Node) -> _FileMeta:
    return (node.mode, node.uid, node.gid, node.atime.ns, node.mtime.ns, node.size,
            node.extended_attributes)  # fmt: skip


def _meta_node(meta: _FileMeta) -> Node:
    """A node with what `_finish` reads of a file's node (the worker's side of _file_meta)."""
    mode, uid, gid, atime, mtime, size, xattrs = meta
    return Node(b"", "file", mode=mode, mtime=GoTime(mtime), atime=GoTime(atime), uid=uid,
                gid=gid, size=size, extended_attributes=xattrs)  # fmt: skip


_worker: Restorer | None = None  # in a worker process: its copy of the restorer


def _init_worker(parent: int, restorer: Restorer) -> None:
    die_with_parent(parent)
    keep_freed_heap()  # blob buffers come back from the heap, not as fresh pages
    # Ctrl-C reaches the whole process group: the restore decides how to stop, its workers
    # finish their job or die with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()  # the parent's objects (the index) stay shared pages: no collection walks them
    restorer.repo.detach_forked_copy()
    restorer._lock = threading.Lock()  # fresh: never one a parent thread held at the fork
    restorer.progress = None
    global _worker
    _worker = restorer


def _run_job(job: _Job) -> _JobResult:
    assert _worker is not None
    return _worker._run_job(job)


class _PackWorkers:
    """Forked worker processes that write packs' blobs for a restore. Each has the
    restorer and the repository as they were at the fork (the index among them); a job
    carries what it writes. They die with the thread that forked them (the restore's)."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool

    @classmethod
    def start(cls, restorer: Restorer, workers: int) -> _PackWorkers | None:
        """The pool (its workers fork at the first job, from this thread), or None.

        Every object there is now is frozen out of this process's collections until the
        shutdown: the pages that hold them are shared with the workers after the fork, and a
        full collection writes into each object's header, so one collection during the walk
        copied every such page (measured: 0.6-0.8 s of the parent's time at 4,000 files)."""
        gc.freeze()
        try:
            pool = ProcessPoolExecutor(
                workers,
                multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(os.getpid(), restorer),
            )
        except (OSError, ValueError):
            gc.unfreeze()
            return None
        return cls(pool)

    def submit(self, job: _Job) -> Future[_JobResult]:
        return self._pool.submit(_run_job, job)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()


def _make_dir(path: bytes) -> None:
    """os.makedirs(path, 0o700, exist_ok=True) in one mkdir when the parent exists, as the
    walk's order makes it (makedirs looks at the parent first: a stat per folder)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, mode=0o700, exist_ok=True)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
