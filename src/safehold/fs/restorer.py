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
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
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
from safehold.repo.index import BlobLocation
from safehold.repo.pack import BlobType, PackedBlob
from safehold.repo.packcache import PackCache
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node
from safehold.repo.walk import find_node


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


class _File:
    """A file being restored: where it goes, its temporary name, how many blob writes are
    left, and the first error (once set, nothing more is written and it is not renamed)."""

    __slots__ = ("created", "error", "holes", "lock", "node", "path", "remaining", "temp")

    def __init__(self, path: bytes, node: Node, blobs: int, temp_name: bytes) -> None:
        self.path = path
        self.node = node
        self.temp = os.path.join(os.path.dirname(path), temp_name)
        self.remaining = blobs
        self.error: Exception | None = None
        self.created = False
        self.holes = False
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
        self._packs: dict[str, dict[str, _Planned]] = {}
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

    def restore(self, snapshot: Snapshot, target: str) -> RestoreStats:
        target_path = os.fsencode(os.path.abspath(target))
        self.repo.index  # noqa: B018  (an unreadable index fails the restore, not each tree)
        self._prepare_target(target_path)
        matched = [False] * len(self._includes)
        dirs: list[tuple[bytes, Node]] = []
        # On remote storage every tree would be a request of its own, one after the other
        # (S3: ~10 ms each): the walk reads whole packs of trees once instead.
        remote = self.repo.backend.capabilities.local_path is None
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
        finally:
            if own_cache:
                self.repo.pack_cache = None  # data packs are read in runs, not cached
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
                os.makedirs(path, mode=0o700, exist_ok=True)
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
        temp_name = b"%s%d" % (self._temp_prefix, self._temp_count)
        file = _File(path, node, len(content), temp_name)
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
        for location, offset in places:
            blobs = self._packs.setdefault(location.pack_id, {})
            planned = blobs.get(location.blob.id)
            if planned is None:
                planned = blobs[location.blob.id] = _Planned(location.blob)
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

    def _restore_contents(self) -> None:
        remote = self.repo.backend.capabilities.local_path is None
        # remote storage: one request per pack; local: a few MiB per read bound the memory
        span, gap = (1 << 62, 1 << 62) if remote else (_READ_SPAN, _READ_GAP)
        packs, self._packs = self._packs, {}
        if not packs:
            return
        with ThreadPoolExecutor(max(1, self.options.workers), "restore") as pool:
            futures = [
                pool.submit(self._restore_pack, pack_id, blobs, span, gap)
                for pack_id, blobs in packs.items()
            ]
            try:
                for future in as_completed(futures):
                    future.result()
                    self._report()
            except BaseException:
                self._stop = True  # e.g. the lock was lost: the workers stop at their next read
                raise

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
                if file.created:
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
            with file.lock or contextlib.nullcontext():  # one blob: no other writer
                if not file.created:
                    fd = os.open(file.temp, flags | os.O_CREAT | os.O_EXCL, 0o600)
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
        message = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        with self._lock:
            self.stats.errors.append((os.fsdecode(path), message))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
