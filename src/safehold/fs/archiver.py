"""Back up file trees into a snapshot.

The walk runs on the calling thread; reading, chunking and hashing run on a file pool; new
blobs are compressed, encrypted and packed on the blob pool (see blobsaver). A file whose
size, mtime, ctime and inode equal its node in the parent snapshot is not read at all, which
is what makes re-backing up an unchanged tree take seconds.

Write order: packs, then index files (also every `index_every_packs` packs and every
`index_interval` seconds, so a killed backup leaves reusable data), then the snapshot. A kill at
any moment leaves earlier snapshots intact; the next backup reuses indexed blobs and `prune`
removes what nothing references.

Interrupted (Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the CLI): the saver takes no
new blobs, the blobs already queued are packed, the packs in flight are written and indexed,
and BackupInterruptedError says how much was kept. No snapshot is written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, BinaryIO, TypeAlias

from safehold.errors import BackupInterruptedError, LockLostError, SafeholdError, UsageError
from safehold.fs.blobsaver import BlobSaver, SaverStoppedError
from safehold.fs.excludes import ExcludeMatcher
from safehold.fs.metadata import (
    group_name,
    json_file_unchanged,
    node_from_stat,
    reusable_dir_json,
    reusable_file_json,
    user_name,
)
from safehold.fs.smallfiles import (
    BATCH_FILES,
    DEFER,
    SMALL_FILE,
    BatchResult,
    FileResult,
    ReaderProcesses,
    SlotReader,
    open_for_reading,
    read_up_to,
)
from safehold.fs.statahead import Seen, StatsAhead
from safehold.fs.treeprefetch import TreeStream
from safehold.repo.chunker import Chunker
from safehold.repo.format import encode_json
from safehold.repo.gotypes import GO_MODE_DIR, GoTime, format_time, go_quote
from safehold.repo.objectlock import LockReport
from safehold.repo.pack import BlobType
from safehold.repo.packer import DEFAULT_PACK_SIZE, Packer
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node

_SMALL_FILE = SMALL_FILE  # files up to this size are one blob: no chunker needed
_MAX_FILES_IN_FLIGHT = 256  # files queued for or being read
_MAX_PENDING_DIRS = 4096  # walked directories waiting for their files (bounds memory)


@dataclass
class BackupOptions:
    excludes: list[str] = field(default_factory=list)
    compression_level: int | None = 3
    file_workers: int = 2
    # reader processes for the small files of folders the parent snapshot does not have (a
    # first backup): they use every core where threads share one (see fs/smallfiles);
    # 0: read on threads only. Used from the `process_min_files`th small file on.
    file_processes: int = field(default_factory=lambda: _default_processes())
    process_min_files: int = 64
    blob_workers: int = max(2, os.cpu_count() or 2)
    max_inflight_bytes: int = 16 * 1024 * 1024
    pack_size: int = DEFAULT_PACK_SIZE
    index_every_packs: int = 32
    # also write the index this often (seconds) while packs are stored: a kill -9 loses at
    # most this much upload work; None: only by pack count
    index_interval: float | None = 300.0
    read_all: bool = False  # ignore the parent's metadata and read every file
    # decode the parent's trees ahead of the walk in a forked child (local storage, Linux;
    # see fs/treeprefetch); False: the walk loads each one itself
    prefetch_trees: bool = True
    # entries stat'ed ahead of the walk (fs/statahead: while the key was derived), each
    # taken once instead of asking the kernel again
    stats_ahead: StatsAhead | None = None
    # with a progress callback: count the files and bytes to visit on a thread of its own
    # (as restic's scanner does), so progress has a total and an ETA
    scan: bool = True


@dataclass
class BackupStats:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    others: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    data_blobs_new: int = 0
    tree_blobs_new: int = 0
    bytes_added: int = 0
    bytes_stored: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class BackupResult:
    snapshot: Snapshot
    stats: BackupStats
    locks: LockReport | None = None  # the Object Lock extension that followed (S3)


JsonNode = dict[str, Any]
_Entry = tuple[JsonNode, "Future[list[str]] | None"]


def _default_processes(cores: int | None = None) -> int:
    """Small-file reader processes: one more than the cores (up to 4), none on one core.
    A reader waits on its slots while the backup process packs its batches, and the extra
    one keeps the cores busy meanwhile: on 2 cores 3 readers backed up 20,000 small files
    in 0.65-0.66x restic's time against 0.68-0.74x with 2, in the same run (§6.13)."""
    if cores is None:
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity is not None else os.cpu_count()
    cores = cores or 1
    return min(cores + 1, 4) if cores > 1 else 0


@dataclass(eq=False)
class _Batch:
    """Regular files of one directory handed to a reader process (see fs/smallfiles)."""

    items: list[tuple[bytes, bytes]]  # (directory, name)
    matchers: list[ExcludeMatcher]  # each file's
    source: str  # the plan source (progress)
    submitted: bool = False
    settled: threading.Event = field(default_factory=threading.Event)  # blobs packed, or failed
    results: list[FileResult] | None = None  # None once settled: the batch failed (`error`)
    error: BaseException | None = None
    resolved: bool = False  # outcomes taken by the walk (`outcomes`)
    outcomes: list[_Outcome] = field(default_factory=list)


@dataclass(eq=False)
class _Slot:
    """A file of a directory whose node a reader process makes: the `index`th of `batch`."""

    batch: _Batch
    index: int


# What became of a batched file: its node's JSON; None (skipped, error reported); the entry of
# the threaded path (a file the reader handed back); or its slot in a later batch (deferred)
_Outcome: TypeAlias = "bytes | _Entry | _Slot | None"


class _ParentTree:
    """One directory of the parent snapshot, kept as raw JSON: comparing raw nodes is much
    cheaper than decoding them, and an unchanged directory is recognised without encoding."""

    def __init__(self, tree_id: str, nodes: list[JsonNode]) -> None:
        self.tree_id = tree_id
        self.nodes = nodes
        self._by_name = {node.get("name"): node for node in nodes}

    def get(self, name: bytes) -> JsonNode | None:
        return self._by_name.get(go_quote(name))


class _ParentTrees:
    """Loads directories of the parent snapshot as the walk reaches them.

    Loading ahead on a thread pool was measured slower: the decoding holds the GIL, and GIL
    hand-offs between the walk and the loader cost more than the overlap gained. On local
    storage a forked child decodes them ahead instead (fs/treeprefetch.py, `prefetch`).
    """

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._stream: TreeStream | None = None

    def prefetch(self, root: _ParentTree) -> None:
        """Decode the subtrees of `root` ahead of the walk in a child process (call before
        the backup starts threads: it forks)."""
        self._stream = TreeStream.start(self._repo, root.nodes)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def load(self, tree_id: str) -> _ParentTree | None:
        try:
            raw = self._stream.load(tree_id) if self._stream is not None else None
            if raw is None:
                raw = self._repo.load_blob(tree_id, BlobType.TREE)
            nodes: list[JsonNode] = json.loads(raw)["nodes"] or []
        except Exception:  # an unreadable parent only costs speed: everything is read
            return None
        return _ParentTree(tree_id, nodes)

    def take(self, previous: JsonNode | None) -> _ParentTree | None:
        if previous is None or previous.get("type") != "dir" or not previous.get("subtree"):
            return None
        return self.load(previous["subtree"])


class _ChunkerPool:
    """One Chunker (and its buffer) per reader thread."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._local = threading.local()

    def get(self) -> Chunker:
        chunker: Chunker | None = getattr(self._local, "chunker", None)
        if chunker is None:
            chunker = Chunker(self._seed)
            self._local.chunker = chunker
        return chunker


@dataclass
class _PendingDir:
    """A walked directory whose tree is stored once its file readers are done."""

    entries: list[tuple[bytes, _Entry | _Slot]]
    parent: _ParentTree | None
    owner: JsonNode  # the directory's node in its parent directory; receives "subtree"

    def ready(self) -> bool:
        for _, entry in self.entries:
            outcome: Any = entry
            while type(outcome) is _Slot:
                batch = outcome.batch
                if not batch.resolved:
                    return False
                if batch.results is None:
                    outcome = None
                    break
                outcome = batch.outcomes[outcome.index]
            if type(outcome) is tuple and outcome[1] is not None and not outcome[1].done():
                return False
        return True


StreamOpener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass
class BackupItem:
    """One thing to put into the snapshot tree at `components`: a file or directory on disk,
    or the bytes of a stream (a database dump). Exactly one of `real_path`, `stream` is set.

    `parents_on_disk`: the directories above it in the tree are real directories whose
    metadata is recorded (command-line paths); otherwise they are made up (plan sources).
    A stream's opener is a context manager; leaving it raises if the producer failed.

    For a stream, `mtime` is the time its file node carries (else the backup's start), and
    `unchanged` says the producer knows the parent snapshot's file at this place holds these
    very bytes (a bucket object with the same ETag, size and LastModified): its node is then
    kept as it is, as an unchanged file on disk is, and the stream is never opened, unless
    the parent has no file there or one of its blobs is no longer indexed.
    `readers` asks for that many streams of this kind to be read at once (parallel GETs);
    the reader pool grows to the largest request.
    """

    components: list[bytes]
    real_path: bytes | None = None
    stream: StreamOpener | None = None
    parents_on_disk: bool = True
    excludes: list[str] = field(default_factory=list)  # on top of BackupOptions.excludes
    mtime: GoTime | None = None
    unchanged: bool = False
    readers: int = 1


class Archiver:
    def __init__(
        self,
        repo: Repository,
        options: BackupOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.repo = repo
        self.options = options or BackupOptions()
        self.progress = progress
        self.stats = BackupStats()
        if repo.config.version < 2:  # format v1 has no compressed blobs
            self.options.compression_level = None
        self._matcher = ExcludeMatcher(self.options.excludes)
        now = repo.clock()
        self._offset = now.offset
        self._started = now  # replaced by the snapshot's time; made-up directories carry it
        self._chunkers = _ChunkerPool(repo.config.chunker_seed)
        self._stats_lock = threading.Lock()
        self._hardlinks: dict[tuple[int, int], Future[list[str]]] = {}
        self._packer = Packer(repo.master, repo.write_pack, self.options.pack_size)
        self._parents = _ParentTrees(repo)
        self._ahead = self.options.stats_ahead
        self._saver: BlobSaver | None = None
        self._file_pool: ThreadPoolExecutor | None = None
        self._file_slots = threading.BoundedSemaphore(_MAX_FILES_IN_FLIGHT)
        self._pending_dirs: deque[_PendingDir] = deque()
        self._index_mutex = threading.Lock()
        self._kept_bytes = 0  # plaintext of the blobs indexed by this run
        self._files_done = 0  # files read or found unchanged (progress)
        self._bytes_skipped = 0  # the size of the files found unchanged (progress)
        self._walk_source = ""  # the plan source the walk is in (progress)
        self._top_level_sources = False
        self._scanner: _Scanner | None = None
        self._procs: ReaderProcesses | None = None
        self._unresolved: deque[_Batch] = deque()  # submitted batches, oldest first
        self._open_batch: _Batch | None = None  # filling up, not yet submitted
        self._candidates = 0  # small-file candidates seen (see process_min_files)

    # ----- entry point ------------------------------------------------------------------

    def backup(
        self,
        paths: list[str],
        *,
        parent: Snapshot | None = None,
        tags: list[str] | None = None,
        safehold_meta: dict[str, object] | None = None,
        time: GoTime | None = None,
    ) -> BackupResult:
        """Back up `paths` into one snapshot; per-file read errors are collected, not fatal."""
        return self.backup_items(
            _resolve_targets(paths),
            paths=[snapshot_path(p) for p in paths],
            parent=parent,
            tags=tags,
            safehold_meta=safehold_meta,
            time=time,
        )

    def backup_items(
        self,
        targets: list[BackupItem],
        *,
        paths: list[str],
        parent: Snapshot | None = None,
        tags: list[str] | None = None,
        safehold_meta: dict[str, object] | None = None,
        time: GoTime | None = None,
        finalize_meta: Callable[[BackupStats, str], dict[str, object]] | None = None,
        sources: bool = False,
    ) -> BackupResult:
        """Back up items placed anywhere in one snapshot tree (see BackupItem).

        `sources`: the top-level folders are plan sources (progress reports name them).

        `finalize_meta(stats, root_tree_id)`, when given, runs after all data is stored and
        before the snapshot is written; what it returns is merged into the snapshot's
        `safehold` field (sources record their manifests this way).
        """
        started = time or self.repo.clock()
        self._started = started
        self._top_level_sources = sources
        began = monotonic()  # durations from a monotonic clock, not the (injectable) wall one
        parent_root = self._parents.load(parent.tree) if parent is not None else None
        if parent_root is not None:
            if self.options.prefetch_trees:  # forks: before this backup starts any thread
                self._parents.prefetch(parent_root)
        elif any(item.real_path is not None for item in targets):
            # forked first, before this backup starts any thread (see ReaderProcesses)
            self._procs = ReaderProcesses.start(
                self.options.file_processes,
                self.repo.master,
                self.options.compression_level,
                self._offset,
            )
        try:
            self._saver = BlobSaver(
                self.repo,
                self._packer,
                self.options.blob_workers,
                self.options.compression_level,
                self.options.max_inflight_bytes,
            )
            readers = max([self.options.file_workers, *(item.readers for item in targets)])
            self._file_pool = ThreadPoolExecutor(readers, "file")
        except BaseException:
            self._parents.close()
            if self._procs is not None:
                self._procs.shutdown()
            raise
        timer = _IndexTimer(self.options.index_interval, self._write_index)
        if self.progress is not None and self.options.scan:
            self._scanner = _Scanner(targets, self.options.excludes)
            self._scanner.start()
        try:
            timer.start()
            try:
                root_id = self._save_virtual_dir(targets, [], parent_root)
                self._saver.wait()
                self._report_phase("finishing")
                self._packer.flush()
            except KeyboardInterrupt:
                timer.stop()
                self._report_phase("interrupted: storing the packs in flight")
                self._keep_work_in_flight()
                raise BackupInterruptedError(self._kept_bytes) from None
            timer.stop()
            self._write_index()
        finally:
            timer.stop()
            self._parents.close()
            if self._scanner is not None:
                self._scanner.stop()
            if self._procs is not None:
                self._procs.shutdown()
                self._procs = None
            self._file_pool.shutdown(wait=True, cancel_futures=True)
            self._saver.shutdown()
            self._packer.close()
        self.stats.data_blobs_new = self._saver.new_blobs - self.stats.tree_blobs_new
        self.stats.bytes_added = self._saver.new_bytes
        self.stats.bytes_stored = self._packer.bytes_written
        meta = dict(safehold_meta or {})
        if finalize_meta is not None:
            meta.update(finalize_meta(self.stats, root_id))
        meta.setdefault("complete", not self.stats.errors)
        meta["summary"] = {
            "files_new": self.stats.files_new,
            "files_changed": self.stats.files_changed,
            "files_unmodified": self.stats.files_unmodified,
            "dirs": self.stats.dirs,
            "bytes_total": self.stats.bytes_total,
            "bytes_added": self.stats.bytes_added,
            "bytes_stored": self.stats.bytes_stored,
            "seconds": round(monotonic() - began, 3),
        }
        if self.stats.errors:
            meta.setdefault("errors", [f"{p}: {m}" for p, m in self.stats.errors[:100]])
        snapshot = Snapshot(
            time=started,
            tree=root_id,
            paths=paths,
            hostname=self.repo.host.hostname,
            username=self.repo.host.username,
            uid=self.repo.host.uid,
            gid=self.repo.host.gid,
            parent=parent.id if parent is not None else None,
            excludes=list(self.options.excludes),
            tags=list(tags or []),
            safehold=meta,
        )
        self.repo.save_snapshot(snapshot)
        return BackupResult(snapshot, self.stats)

    def _write_index(self) -> None:
        """Index the packs stored since the last index write (walk thread or timer thread)."""
        with self._index_mutex:
            finished = self._packer.take_finished()
            if not finished:
                return
            try:
                self.repo.save_index(finished, [])
            except BaseException:
                self._packer.give_back(finished)  # the next write (or the salvage) retries
                raise
            self._kept_bytes += sum(
                blob.plaintext_length for blobs in finished.values() for blob in blobs
            )

    def _keep_work_in_flight(self) -> None:
        """After an interrupt: pack the blobs already queued, store the partly filled packs
        and index them, so the next backup uploads only what is missing. A second Ctrl-C
        here stops at once (what is stored but not indexed is left for prune)."""
        assert self._saver is not None
        self._saver.stop()  # readers stop at their next chunk
        self._saver.settle()
        with suppress(OSError, SafeholdError):  # a failed pack is not indexed; the stored are
            self._packer.flush()
        self._write_index()

    def _maybe_write_index(self) -> None:
        if self._packer.finished_count >= max(1, self.options.index_every_packs):
            self._write_index()

    # ----- trees ------------------------------------------------------------------------

    def _save_tree(self, nodes: list[JsonNode | bytes], parent: _ParentTree | None) -> str:
        """Store a directory; an unchanged directory reuses the parent's tree as it is.
        A node is a JSON value, or already encoded (by a reader process): the same bytes."""
        if parent is not None and nodes == parent.nodes:
            return parent.tree_id
        if any(type(node) is bytes for node in nodes):
            data = b'{"nodes":[' + b",".join(
                node if type(node) is bytes else encode_json(node) for node in nodes
            ) + b"]}\n"  # fmt: skip
        else:
            data = encode_json({"nodes": nodes}) + b"\n"
        tree_id = hashlib.sha256(data).hexdigest()
        saver = self._saver
        assert saver is not None
        # with reader processes the walk waits for them (it is ahead): trees (a few kB per
        # folder) are encoded here, a batch at a time, cheaper than a future on the blob pool
        # each and its hand-offs
        save = saver.save_batched if self._procs is not None else saver.save
        if save(tree_id, BlobType.TREE, data):
            self.stats.tree_blobs_new += 1
        return tree_id

    def _save_virtual_dir(
        self, targets: list[BackupItem], prefix: list[bytes], parent: _ParentTree | None
    ) -> str:
        """A directory made of command-line targets (and the parents they need)."""
        by_name: dict[bytes, list[BackupItem]] = {}
        for target in targets:
            by_name.setdefault(target.components[len(prefix)], []).append(target)
        entries: list[tuple[bytes, _Entry]] = []
        for name, group in sorted(by_name.items()):
            leaf = next((t for t in group if len(t.components) == len(prefix) + 1), None)
            previous = parent.get(name) if parent is not None else None
            virtual_path = b"/" + b"/".join([*prefix, name])
            if not prefix and self._top_level_sources:  # a plan source's own folder
                self._walk_source = name.decode("utf-8", "replace")
            if leaf is not None and leaf.stream is not None:
                entries.append((virtual_path, self._save_stream(name, leaf, previous)))
                continue
            if leaf is not None:
                assert leaf.real_path is not None
                matcher = self._matcher
                if leaf.excludes:
                    matcher = ExcludeMatcher([*self.options.excludes, *leaf.excludes])
                entry = self._save_entry(name, leaf.real_path, previous, matcher)
                if entry is not None:
                    entries.append((leaf.real_path, entry))
                continue
            value = self._virtual_dir_node(name, prefix, group[0])
            sub_parent = self._parents.take(previous)
            value["subtree"] = self._save_virtual_dir(group, [*prefix, name], sub_parent)
            entries.append((virtual_path, (value, None)))
        self._drain(block=True)
        nodes = [done for path, entry in entries if (done := self._settle(path, entry))]
        return self._save_tree(nodes, parent)

    def _virtual_dir_node(self, name: bytes, prefix: list[bytes], item: BackupItem) -> JsonNode:
        """A directory above the items: the real one on disk, or one made up for the tree."""
        if item.parents_on_disk and item.real_path is not None:
            absolute = item.real_path.startswith(b"/")
            real_dir = (b"/" if absolute else b"") + b"/".join([*prefix, name])
            # os.stat: a parent of a target may be a symlink to a directory (/var/run -> /run);
            # lstat would store a symlink node whose subtree no restore ever visits
            node = node_from_stat(name, real_dir, os.stat(real_dir), self._offset)
            assert node is not None
            return node.to_json()
        return self._made_up_node(name, "dir", GO_MODE_DIR | 0o755).to_json()

    def _made_up_node(self, name: bytes, kind: str, mode: int) -> Node:
        host = self.repo.host
        return Node(
            name=name, type=kind, mode=mode, mtime=self._started, atime=self._started,
            ctime=self._started, uid=host.uid, gid=host.gid, user=user_name(host.uid),
            group=group_name(host.gid),
        )  # fmt: skip

    def _save_stream(self, name: bytes, item: BackupItem, previous: JsonNode | None) -> _Entry:
        """A file node whose content is read from a stream (its size is known only at the end),
        or the parent's node when the producer vouches the content is unchanged."""
        if item.unchanged and self._reusable(previous):
            assert previous is not None
            self.stats.files_unmodified += 1
            self.stats.bytes_total += int(previous.get("size") or 0)
            self._skipped(int(previous.get("size") or 0))
            self._report(b"/" + b"/".join(item.components), self._walk_source)
            return dict(previous), None
        value = self._made_up_node(name, "file", 0o600).to_json()
        if item.mtime is not None:
            value["mtime"] = value["atime"] = value["ctime"] = format_time(item.mtime)
        value["content"] = []
        if previous is None:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1
        assert self._file_pool is not None and item.stream is not None
        path = b"/" + b"/".join(item.components)
        future = self._file_pool.submit(
            self._read_stream, item.stream, value, path, self._walk_source
        )
        return value, future

    def _reusable(self, previous: JsonNode | None) -> bool:
        return (
            not self.options.read_all
            and previous is not None
            and previous.get("type") == "file"
            and all(self.repo.index.has(blob) for blob in previous.get("content") or [])
        )

    def _read_stream(
        self, opener: StreamOpener, value: JsonNode, path: bytes, source: str
    ) -> list[str]:
        content: list[str] = []
        size = 0
        with opener() as stream:
            head = _read_head(stream, _SMALL_FILE + 1)
            if len(head) <= _SMALL_FILE:  # small: one blob, no chunker buffer for this thread
                if head:
                    content.append(self._save_chunk(head, here=True))
                size = len(head)
                self._count_read(size)
            else:
                readinto = _HeadThenRest(head, stream).readinto
                for chunk in self._chunkers.get().chunks(readinto):
                    data = bytes(chunk)
                    content.append(self._save_chunk(data))
                    size += len(data)
                    self._count_read(len(data))
                    self._report(path, source)
        with self._stats_lock:
            self.stats.bytes_total += size
            self._files_done += 1
        self._report(path, source)
        if size:
            value["size"] = size  # set before _settle hands the node to its tree
        return content

    def _save_entry(
        self,
        name: bytes,
        path: bytes,
        previous: JsonNode | None,
        matcher: ExcludeMatcher | None = None,
    ) -> _Entry | None:
        try:
            seen = self._ahead.take(path) if self._ahead is not None else None
            st = seen.st if seen is not None else os.lstat(path)
            if previous is not None and not self.options.read_all and stat.S_ISREG(st.st_mode):
                # an unchanged file (most of a re-backup): the parent's node, refreshed
                reused = reusable_file_json(previous, path, st, self._offset, self._known(seen))
                if reused is not None and self._all_indexed(reused["content"]):
                    self.stats.bytes_total += st.st_size
                    self._count_unmodified(path, st.st_size)
                    return reused, None
            value: JsonNode | None = None
            if previous is not None and not self.options.read_all and stat.S_ISDIR(st.st_mode):
                # an unchanged folder's node: the parent's, refreshed
                value = reusable_dir_json(previous, path, st, self._offset, self._known(seen))
            node = node_from_stat(name, path, st, self._offset) if value is None else None
        except OSError as err:
            self._error(path, err)
            return None
        if value is None:
            if node is None:
                return None
            value = node.to_json()
        if value["type"] == "dir":
            self.stats.dirs += 1
            self._save_dir(path, self._parents.take(previous), value, matcher or self._matcher)
            return value, None
        if value["type"] == "file":
            return value, self._save_file(value, path, st, previous)
        self.stats.others += 1
        return value, None

    def _known(self, seen: Seen | None) -> tuple[tuple[str, str, str], bool] | None:
        """The times and xattr presence `collect` found for a file, when formatted at this
        backup's UTC offset."""
        if seen is None or seen.times is None or self._ahead is None:
            return None
        return (seen.times, seen.has_xattrs) if self._ahead.offset == self._offset else None

    def _save_dir(
        self, path: bytes, parent: _ParentTree | None, owner: JsonNode, matcher: ExcludeMatcher
    ) -> None:
        """Walk a directory; its tree is stored later, once its files are read (see _drain),
        so the walk never waits for readers and both cores stay busy."""
        self.repo.check_lock()  # a walk over unchanged files writes nothing for a long time
        # the folder is new (no parent tree): its regular files go to the reader processes
        procs = self._procs if parent is None and self._procs and not self._procs.broken else None
        names = self._ahead.take_listing(path) if self._ahead is not None else None
        try:
            if names is not None and procs is None:
                listed = [(name, False) for name in names]
            else:
                with os.scandir(path) as entries:
                    if procs is None:
                        listed = sorted((entry.name, False) for entry in entries)
                    else:
                        listed = sorted((entry.name, _is_file(entry)) for entry in entries)
        except OSError as err:
            self._error(path, err)
            listed = []
        pending: list[tuple[bytes, _Entry | _Slot]] = []
        for name, is_file in listed:
            child = os.path.join(path, name)
            if matcher and matcher.excluded(name, os.path.abspath(child)):
                continue
            if is_file:
                self._candidates += 1
                if self._candidates > self.options.process_min_files:
                    batch = self._open_batch
                    if batch is None:
                        batch = self._open_batch = _Batch([], [], self._walk_source)
                    pending.append((child, _Slot(batch, len(batch.items))))
                    batch.items.append((path, name))
                    batch.matchers.append(matcher)
                    if len(batch.items) >= BATCH_FILES:
                        self._submit_batch(batch)
                    continue
            entry = self._save_entry(name, child, parent.get(name) if parent else None, matcher)
            if entry is not None:
                pending.append((child, entry))
        self._pending_dirs.append(_PendingDir(pending, parent, owner))
        self._drain(block=False)

    # ----- small files on the reader processes ------------------------------------------

    def _submit_batch(self, batch: _Batch) -> None:
        """Hand a batch to a reader process (waits while enough batches are in flight). A
        batch fills up over several directories: it is sent when full, or when the walk
        needs its outcome."""
        assert self._procs is not None
        if batch is self._open_batch:
            self._open_batch = None
        batch.submitted = True
        try:  # waits while every slot holds a batch
            self._procs.submit(batch.items, lambda f, slot: self._batch_done(batch, f, slot))
        except BrokenProcessPool as err:  # a worker died: this and later files go to threads
            self._procs.broken = True
            batch.error = err
            batch.settled.set()
        self._unresolved.append(batch)
        self._resolve_batches()

    def _batch_done(self, batch: _Batch, future: Future[BatchResult], slot: SlotReader) -> None:
        """A batch came back (on the pool's thread): pack its new blobs from the slot, keep
        the nodes."""
        try:
            if future.cancelled():
                raise SaverStoppedError("the backup is stopping")
            results, blobs = future.result()
            saver = self._saver
            assert saver is not None
            if blobs:
                saver.save_encoded_run(slot, blobs)
            batch.results = results
        except BaseException as err:  # reported by the walk (see _settle)
            batch.error = err
        finally:
            batch.settled.set()

    def _resolve_batches(self, until: _Batch | None = None) -> None:
        """Take the outcomes of the batches that came back, oldest first; with `until`, wait
        for that batch (and those before it) first."""
        if until is not None and not until.submitted:
            self._submit_batch(until)
        queue = self._unresolved
        while queue:
            batch = queue[0]
            if not batch.settled.is_set():
                if until is None or until.resolved:
                    return
                batch.settled.wait()
            queue.popleft()
            self._resolve(batch)

    def _resolve(self, batch: _Batch) -> None:
        """The walk's side of a batch that came back: counts, errors, and the files the
        reader handed back queued on the threaded path (deferred ones in a new batch)."""
        results = batch.results
        if results is None and isinstance(batch.error, BrokenProcessPool):
            assert self._procs is not None
            self._procs.broken = True  # from now on the threads read every file
            results = batch.results = [None] * len(batch.items)
        if results is None:
            batch.resolved = True
            return  # failed: _settle reports batch.error for each of its files
        outcomes = batch.outcomes
        deferred: list[int] = []
        files = read = total = 0
        for number, result in enumerate(results):
            if type(result) is tuple:
                outcomes.append(result[0])
                files += 1
                total += result[1]
                read += result[2]
                continue
            directory, name = batch.items[number]
            path = os.path.join(directory, name)
            if result is None:
                outcomes.append(self._save_handed_back(name, path, batch.matchers[number]))
            elif result == DEFER:
                outcomes.append(None)
                deferred.append(number)
            else:
                assert isinstance(result, OSError)
                self._error(path, result)
                outcomes.append(None)
        self.stats.files_new += files
        self.stats.bytes_total += total
        with self._stats_lock:
            self.stats.bytes_read += read
            self._files_done += files
        if files:
            self._report(os.path.join(*batch.items[-1]), batch.source)
        if deferred:
            again = _Batch([batch.items[n] for n in deferred],
                           [batch.matchers[n] for n in deferred], batch.source)  # fmt: skip
            for position, number in enumerate(deferred):
                outcomes[number] = _Slot(again, position)
        batch.resolved = True
        if deferred:
            if self._procs is not None and not self._procs.broken:
                self._submit_batch(again)
            else:
                again.error = BrokenProcessPool("the reader processes are gone")
                again.settled.set()
                self._unresolved.append(again)

    def _save_handed_back(self, name: bytes, path: bytes, matcher: ExcludeMatcher) -> _Entry | None:
        """A file a reader did not back up (big, a hard link, changed kind): the threaded
        path. One that became a directory since the listing is reported, not walked (its
        tree would be stored after its parent's)."""
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise OSError(errno.EISDIR, "became a directory while the backup ran")
        except OSError as err:
            self._error(path, err)
            return None
        return self._save_entry(name, path, None, matcher)

    def _drain(self, block: bool) -> None:
        """Store the trees of walked directories whose files are all read, oldest first.

        Directories queue in post-order (children before parents), so storing them in queue
        order always has every subtree id ready. Without `block`, stop at the first directory
        still waiting for a reader, unless too many are queued (the memory bound).
        """
        self._resolve_batches()
        queue = self._pending_dirs
        while queue:
            head = queue[0]
            if not block and len(queue) < _MAX_PENDING_DIRS and not head.ready():
                break
            queue.popleft()
            nodes = [node for path, entry in head.entries if (node := self._settle(path, entry))]
            head.owner["subtree"] = self._save_tree(nodes, head.parent)
        self._maybe_write_index()

    def _settle(self, path: bytes, entry: _Entry | _Slot) -> JsonNode | bytes | None:
        """The finished node: file content filled in once its reader is done."""
        outcome: _Outcome = entry
        while isinstance(outcome, _Slot):
            batch = outcome.batch
            if not batch.resolved:
                self._resolve_batches(until=batch)
            if batch.results is None:
                error = batch.error
                assert error is not None
                if isinstance(error, (LockLostError, SaverStoppedError)) or not isinstance(
                    error, (OSError, SafeholdError)
                ):
                    raise error  # the whole backup stops, not just this file
                self._error(path, error)
                return None
            outcome = batch.outcomes[outcome.index]
        if outcome is None or isinstance(outcome, bytes):
            return outcome
        value, future = outcome
        if future is None:
            return value
        try:
            value["content"] = future.result()
        except (LockLostError, SaverStoppedError):
            raise  # the whole backup stops, not just this file
        except (OSError, SafeholdError) as err:
            self._error(path, err)
            return None
        return value

    # ----- files ------------------------------------------------------------------------

    def _save_file(
        self, value: JsonNode, path: bytes, st: os.stat_result, previous: JsonNode | None
    ) -> Future[list[str]] | None:
        """Reuse the parent's content when the file is unchanged, else queue it for reading."""
        self.stats.bytes_total += st.st_size
        if (
            not self.options.read_all
            and previous is not None
            and json_file_unchanged(value, previous)
            and self._all_indexed(previous["content"])
        ):
            value["content"] = list(previous["content"])
            self._count_unmodified(path, st.st_size)
            return None
        if previous is None:
            self.stats.files_new += 1
        else:
            self.stats.files_changed += 1
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self._hardlinks:
            return self._hardlinks[key]
        assert self._file_pool is not None
        self._file_slots.acquire()
        future = self._file_pool.submit(self._read_file, path, st.st_size, self._walk_source)
        future.add_done_callback(lambda _: self._file_slots.release())
        if st.st_nlink > 1:
            self._hardlinks[key] = future
        self._report(path, self._walk_source)  # the walk's position, ahead of the readers
        return future

    def _all_indexed(self, content: list[str]) -> bool:
        index = self.repo.index
        return all(index.has(blob) for blob in content)

    def _count_unmodified(self, path: bytes, size: int) -> None:
        self.stats.files_unmodified += 1
        self._skipped(size)
        self._report(path, self._walk_source)

    def _read_file(self, path: bytes, size_hint: int, source: str = "") -> list[str]:
        """Chunk and hash a file; new chunks go to the blob pool. Returns the content ids."""
        content = self._read_file_content(path, size_hint, source)
        with self._stats_lock:
            self._files_done += 1
        self._report(path, source)
        return content

    def _read_file_content(self, path: bytes, size_hint: int, source: str) -> list[str]:
        assert self._saver is not None
        content: list[str] = []
        fd = open_for_reading(path)
        if size_hint <= _SMALL_FILE:  # one read, no file object (most files of a tree)
            try:
                data = read_up_to(fd, _SMALL_FILE + 1)
            except BaseException:
                os.close(fd)
                raise
            if len(data) <= _SMALL_FILE:
                os.close(fd)
                if data:
                    content.append(self._save_chunk(data, here=True))
                self._count_read(len(data))
                return content
            os.lseek(fd, 0, os.SEEK_SET)
        with open(fd, "rb", buffering=0) as handle:
            pending = []
            for chunk in self._chunkers.get().chunks(handle.readinto):
                data = bytes(chunk)
                pending.append(self._saver.hash_and_save(data))
                self._count_read(len(data))
                self._report(path, source)
        return [future.result() for future in pending]

    def _save_chunk(self, data: bytes, here: bool = False) -> str:
        """Hash a chunk and store it if new: on the blob pool, or `here` on this reader
        thread (a small file's one blob: the hand-off would cost more than the work)."""
        assert self._saver is not None
        blob_id = hashlib.sha256(data).hexdigest()
        if here:
            self._saver.save_here(blob_id, BlobType.DATA, data)
        else:
            self._saver.save(blob_id, BlobType.DATA, data)
        return blob_id

    def _count_read(self, amount: int) -> None:
        with self._stats_lock:
            self.stats.bytes_read += amount

    def _skipped(self, size: int) -> None:
        with self._stats_lock:
            self._files_done += 1
            self._bytes_skipped += size

    def _report(self, path: bytes, source: str = "") -> None:
        """Progress: bytes and files done (read, or found unchanged) of the scanner's totals
        (None until its count is complete); called from the walk and from the readers."""
        if self.progress is None:
            return
        scanner = self._scanner
        total = files_total = None
        if scanner is not None and scanner.complete:
            files_total = scanner.files
            total = None if scanner.streams else scanner.bytes
        done = self.stats.bytes_read + self._bytes_skipped
        self.progress(
            Progress("backup", done, total, "bytes", self._files_done,
                     os.fsdecode(path), files_total, source)
        )  # fmt: skip

    def _report_phase(self, phase: str) -> None:
        if self.progress is not None:
            done = self.stats.bytes_read + self._bytes_skipped
            self.progress(Progress(phase, done, done, "bytes", self._files_done))

    def _error(self, path: bytes, err: OSError | SafeholdError) -> None:
        # decoded with U+FFFD, not surrogates: the messages go into the snapshot's JSON
        message = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        self.stats.errors.append((path.decode("utf-8", "replace"), message))


class _Scanner:
    """Counts the files and bytes a backup will visit, on a thread of its own, so progress
    can show a total and an ETA (as restic's scanner does). Streams count as files of unknown
    size. Its totals are an estimate: files change while the backup runs."""

    def __init__(self, targets: list[BackupItem], excludes: list[str]) -> None:
        self._targets = targets
        self._excludes = excludes
        self._stop = threading.Event()
        self.files = 0
        self.bytes = 0
        self.complete = False
        self.streams = False  # a stream's size is known only once read: no byte total then
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        for item in self._targets:
            if item.real_path is None:
                self.files += 1
                self.streams = True
                continue
            matcher = ExcludeMatcher([*self._excludes, *item.excludes])
            if not self._count(item.real_path, matcher):
                return
        self.complete = True

    def _count(self, root: bytes, matcher: ExcludeMatcher) -> bool:
        """False when stopped."""
        try:
            st = os.lstat(root)
        except OSError:
            return True
        if not stat.S_ISDIR(st.st_mode):
            if stat.S_ISREG(st.st_mode):
                self.files += 1
                self.bytes += st.st_size
            return True
        stack = [root]
        while stack:
            if self._stop.is_set():
                return False
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        path = entry.path
                        if matcher and matcher.excluded(entry.name, os.path.abspath(path)):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(path)
                        elif entry.is_file(follow_symlinks=False):
                            self.files += 1
                            self.bytes += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        return True


class _IndexTimer:
    """Writes the index every `interval` seconds on its own thread while a backup runs, so a
    kill -9 loses at most that much upload work even while the walk waits on one big file.
    A failed write is retried at the next tick; the final index write reports the error."""

    def __init__(self, interval: float | None, write: Callable[[], None]) -> None:
        self._interval = interval
        self._write = write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval is None or self._interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="index-timer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            try:
                self._write()
            except Exception:  # storage or lock errors surface on the walk's own writes
                continue

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _is_file(entry: os.DirEntry[bytes]) -> bool:
    """A regular file by the listing's d_type (an lstat only where the filesystem has none)."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _read_head(stream: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes of a stream, through `readinto` (what every stream offers)."""
    buffer = bytearray(limit)
    view = memoryview(buffer)
    filled = 0
    while filled < limit:
        count = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return bytes(buffer[:filled])


class _HeadThenRest:
    """`readinto` over bytes already read from a stream, then over the rest of the stream."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readinto(self, buffer: memoryview) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return int(self._stream.readinto(buffer) or 0)  # type: ignore[attr-defined]


def snapshot_path(path: str) -> str:
    """A command-line path as a snapshot records it: absolute, and valid UTF-8 as restic writes
    it (a byte that is not UTF-8 becomes U+FFFD; the tree still keeps every name exactly)."""
    return os.fsencode(os.path.abspath(path)).decode("utf-8", "replace")


def _tree_positions(path: str) -> list[tuple[list[bytes], bytes]]:
    """Where one command-line path goes in the tree, as restic 0.14 places it: an absolute path
    keeps all its components (/srv/app -> srv/app); a relative one is stored as named, cleaned
    (./sub -> sub, relative/dir -> relative/dir); the leading `..` steps are dropped
    (../other -> other); and a path that is only `.` or `..` steps stands for its entries,
    which go at the top of the tree (`backup .` in /srv/app stores /a.txt, /sub, ...)."""
    raw = os.fsencode(path)
    if not os.path.lexists(raw):
        raise UsageError(f"{path} does not exist", hint="check the path and try again")
    normalized = os.path.normpath(raw)
    if normalized.startswith(b"/"):
        if normalized.strip(b"/") == b"":
            raise UsageError("backing up / as a whole is not supported", hint="name folders")
        return [([part for part in normalized.split(b"/") if part], normalized)]
    components = normalized.split(b"/")
    while components and components[0] in (b"..", b"."):
        components.pop(0)
    if components:
        return [(components, normalized)]
    return [([name], os.path.join(normalized, name)) for name in sorted(os.listdir(normalized))]


def target_paths(paths: list[str]) -> list[bytes]:
    """The paths on disk a backup of `paths` walks from, as its walk names them (raises
    UsageError where `backup` would)."""
    return [item.real_path for item in _resolve_targets(paths) if item.real_path is not None]


def _resolve_targets(paths: list[str]) -> list[BackupItem]:
    """Map command-line paths to tree positions as restic does (see _tree_positions)."""
    if not paths:
        raise UsageError("nothing to back up", hint="name at least one file or directory")
    targets: list[BackupItem] = []
    seen: dict[tuple[bytes, ...], str] = {}
    for path in paths:
        for components, real_path in _tree_positions(path):
            key = tuple(components)
            if key in seen:
                raise UsageError(f"{path} is given twice (also as {seen[key]})")
            for other in seen:
                if key[: len(other)] == other or other[: len(key)] == key:
                    raise UsageError(f"{path} overlaps {seen[other]}", hint="name each folder once")
            seen[key] = path
            targets.append(BackupItem(components, real_path))
    return targets
