"""Restore a snapshot (or part of it) into a directory.

Directories and special files are created while walking the snapshot; file contents are
written by a thread pool, each blob verified against its id before it is written. Blobs of
zeros become holes (sparse files keep their shape). Directory metadata is applied last,
deepest first, so writing into a directory does not disturb its restored mtime.
A damaged blob fails only the files that use it: they are reported, the rest is restored.
Each file is written under a temporary name in its folder and renamed into place once all its
content is written and verified, so a file that fails leaves nothing under its name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.errors import LockLostError, SafeholdError, TargetNotEmptyError, UsageError
from safehold.fs.metadata import apply_metadata
from safehold.repo.pack import BlobType
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
    workers: int = 4
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
    dirs: int = 0
    others: int = 0
    sockets_skipped: int = 0  # recorded in the snapshot, never restored (as restic)
    bytes_written: int = 0
    bytes_total: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


class _BlobCache:
    """A small LRU of decoded blobs: duplicate files restore without a second decrypt."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, blob_id: str) -> bytes | None:
        with self._lock:
            data = self._items.get(blob_id)
            if data is not None:
                self._items.move_to_end(blob_id)
            return data

    def put(self, blob_id: str, data: bytes) -> None:
        if len(data) > self._limit // 4:
            return
        with self._lock:
            if blob_id in self._items:
                return
            self._items[blob_id] = data
            self._size += len(data)
            while self._size > self._limit:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)


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
        self._cache = _BlobCache(self.options.cache_bytes)
        self._zero_ids: dict[int, str] = {}
        self._hardlinks: dict[tuple[int, int], tuple[bytes, Future[None] | None]] = {}
        self._stats_lock = threading.Lock()
        self._restore_owner = os.geteuid() == 0

    def restore(self, snapshot: Snapshot, target: str) -> RestoreStats:
        if self.repo.pack_cache is None and self.repo.backend.capabilities.local_path is None:
            self.repo.pack_cache = PackCache(self.repo.backend)  # one request per pack
            try:
                return self._restore(snapshot, target)
            finally:
                self.repo.pack_cache = None
        return self._restore(snapshot, target)

    def _restore(self, snapshot: Snapshot, target: str) -> RestoreStats:
        target_path = os.fsencode(os.path.abspath(target))
        self.repo.index  # noqa: B018  (an unreadable index fails the restore, not each tree)
        self._prepare_target(target_path)
        matched = [False] * len(self._includes)
        dirs: list[tuple[bytes, Node]] = []
        futures: list[tuple[bytes, Node, Future[None]]] = []
        with ThreadPoolExecutor(self.options.workers, "restore") as pool:
            for path, node, relative in self._walk(self._root_tree(snapshot), target_path, ()):
                for number, include in enumerate(self._includes):
                    if relative[: len(include)] == include:
                        matched[number] = True
                if self._only is not None and relative in self._only_parents \
                        and not self._under_only(relative):  # fmt: skip
                    os.makedirs(path, mode=0o700, exist_ok=True)  # kept as it is when there
                    continue
                future = self._create(path, node, pool, dirs)
                if future is not None:
                    futures.append((path, node, future))
            for path, node, future in futures:
                try:
                    future.result()
                except (SafeholdError, OSError) as err:
                    self._fail(path, err)
                    continue
                self._finish_file(path, node)
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

    def _create(
        self,
        path: bytes,
        node: Node,
        pool: ThreadPoolExecutor,
        dirs: list[tuple[bytes, Node]],
    ) -> Future[None] | None:
        try:
            if node.type == "dir":
                os.makedirs(path, mode=0o700, exist_ok=True)
                dirs.append((path, node))
                self.stats.dirs += 1
                return None
            if node.type == "socket":
                # restic records sockets and skips them on restore: a socket is created by the
                # server that listens on it, and nothing can be written into one.
                self.stats.sockets_skipped += 1
                return None
            if os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)
            if node.type == "file":
                return self._create_file(path, node, pool)
            self._create_special(path, node)
            self.stats.others += 1
            self._apply(path, node)
        except (SafeholdError, OSError) as err:  # e.g. the damaged first name of a hardlink
            self._fail(path, err)
        return None

    def _create_file(
        self, path: bytes, node: Node, pool: ThreadPoolExecutor
    ) -> Future[None] | None:
        key = (node.device_id, node.inode)
        if node.links > 1 and node.inode and key in self._hardlinks:
            first, first_future = self._hardlinks[key]
            if first_future is not None:
                first_future.result()
            os.link(first, path)
            self.stats.files += 1
            return None
        self.stats.bytes_total += node.size
        future = pool.submit(self._write_file, path, node)
        if node.links > 1 and node.inode:
            self._hardlinks[key] = (path, future)
        return future

    def _create_special(self, path: bytes, node: Node) -> None:
        if node.type == "symlink":
            os.symlink(node.linktarget, path)
        elif node.type == "fifo":
            os.mkfifo(path, 0o600)
        elif node.type in ("dev", "chardev"):
            import stat

            kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
            os.mknod(path, 0o600 | kind, node.device)
        else:
            raise UsageError(f"unknown node type {node.type!r}")

    def _zero_id(self, length: int) -> str:
        zero_id = self._zero_ids.get(length)
        if zero_id is None:
            zero_id = hashlib.sha256(bytes(length)).hexdigest()
            self._zero_ids[length] = zero_id
        return zero_id

    def _blob(self, blob_id: str) -> bytes:
        data = self._cache.get(blob_id)
        if data is None:
            data = self.repo.load_blob(blob_id, BlobType.DATA)
            self._cache.put(blob_id, data)
        return data

    def _write_file(self, path: bytes, node: Node) -> None:
        """Write the content under a temporary name in the same folder, and rename it into
        place only when every blob was written (each verified against its id as it was
        loaded) and the size matches: a file that fails leaves nothing behind."""
        temp = os.path.join(
            os.path.dirname(path), b".safehold-restore-" + secrets.token_hex(8).encode()
        )
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                position = self._write_content(fd, node)
            finally:
                os.close(fd)
            if position != node.size:
                raise UsageError(
                    f"restored size {position} differs from the recorded size {node.size}"
                )
            os.rename(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _write_content(self, fd: int, node: Node) -> int:
        position = 0
        for blob_id in node.content or []:
            location = self.repo.index.lookup(blob_id)
            length = location.blob.plaintext_length if location else -1
            if self.options.sparse and length > 0 and blob_id == self._zero_id(length):
                position += length
                continue
            data = self._blob(blob_id)
            os.pwrite(fd, data, position)
            position += len(data)
            with self._stats_lock:
                self.stats.bytes_written += len(data)
        os.ftruncate(fd, position)
        return position

    def _finish_file(self, path: bytes, node: Node) -> None:
        self.stats.files += 1
        self._apply(path, node)
        if self.progress is not None:
            stats = self.stats
            total = stats.bytes_total or None
            self.progress(
                Progress("restore", stats.bytes_written, total, "bytes", stats.files,
                         os.fsdecode(path))
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
        with self._stats_lock:
            self.stats.errors.append((os.fsdecode(path), message))
