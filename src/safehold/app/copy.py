"""The copy use case: bring snapshots of one repository into another, as `restic copy` does.

    safehold -r TARGET copy --from-repo SOURCE [SNAPSHOT...]

Which snapshots: every snapshot of the source (or the named ones) that the target lacks. Like
restic, a target snapshot is "the same" as a source snapshot when it carries the source's
persistent id (`original`, or the snapshot's own id when it has none) and `same_snapshot`
(repo/snapshot.py, restic's similarSnapshots) holds: everything but the id, `parent` and
`original` matches. The copy gets `original` = the source's `original` or, for a snapshot
that is not itself a copy, the source snapshot's id; `parent` is dropped (it names a snapshot of
the other repository). Running copy twice therefore copies nothing the second time.

Which blobs: every tree and data blob reachable from those snapshots that the target's index
does not hold. Each is read from the source on its own (a ranged read), decrypted, decompressed
and checked against its id, then compressed per the target's format version, encrypted with the
TARGET's key and packed. Blobs are read in source pack order; at most a few blobs are in flight,
so memory stays bounded whatever the repository size (only the set of blob ids is kept).
Trees are read twice from the source: once to walk them, once to copy them (not kept in memory).

Write order, so that a crash or a corrupt source blob never leaves a snapshot without its data:
packs, then the index naming them (every INDEX_EVERY_PACKS packs and at the end), and the
snapshots LAST, only after every blob they need is indexed. A failure before that point writes
no snapshot; the packs already written and indexed stay, so a rerun does not copy them again.

Verification of what was written (cheap but real), before any index names a new pack:
  * each new pack's size is what its blobs + header add up to; its header is read back with two
    ranged reads (trailer, header), decrypted with the target key and compared entry by entry
    with what was packed;
  * one randomly chosen blob per new pack is read back, decrypted and hashed against its id;
  * each index file written is loaded back and must list exactly the new packs;
  * every blob the copied snapshots need must be in the target index before they are written;
  * each snapshot written is loaded back and must carry the source's tree, time and `original`.
`safehold check --read-data` on the target verifies every byte, when that is wanted.

Locks: shared on the source and shared on the target, as restic takes them (a prune on either
side waits; backups and other copies can run alongside).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from safehold.errors import (
    IntegrityError,
    MissingObjectError,
    SafeholdError,
    UsageError,
)
from safehold.repo.format import FileType, object_name
from safehold.repo.index import IndexFile
from safehold.repo.objectlock import LockReport, protect_kept_objects
from safehold.repo.pack import (
    BlobType,
    PackedBlob,
    PackFormatError,
    decode_header,
    encode_blob,
    header_length_from_trailer,
)
from safehold.repo.packer import DEFAULT_PACK_SIZE, Packer
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot, same_snapshot

DEFAULT_COMPRESSION_LEVEL = 3  # what `backup --compression auto` uses
INDEX_EVERY_PACKS = 20
_TRAILER = 4


# ----- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CopiedSnapshot:
    source: Snapshot
    target_id: str | None  # None in a dry run


@dataclass(frozen=True)
class SkippedSnapshot:
    source: Snapshot
    target_id: str  # the target snapshot that already is this one


@dataclass
class CopyResult:
    dry_run: bool = False
    copied: list[CopiedSnapshot] = field(default_factory=list)
    skipped: list[SkippedSnapshot] = field(default_factory=list)
    tree_blobs: int = 0
    data_blobs: int = 0
    bytes_copied: int = 0  # plaintext bytes of the blobs copied (would be, in a dry run)
    bytes_stored: int = 0  # pack bytes written to the target
    packs_written: int = 0
    packs_verified: int = 0
    index_files_written: int = 0
    same_chunker: bool = True  # False: later backups to the target won't dedup against copies
    locks: LockReport | None = None  # the target's Object Lock extension that followed (S3)

    @property
    def blobs(self) -> int:
        return self.tree_blobs + self.data_blobs


# ----- which snapshots --------------------------------------------------------------------


def persistent_id(snapshot: Snapshot) -> str:
    """restic's identity of a snapshot across copies: its `original`, else its own id."""
    return snapshot.original or snapshot.id


def copy_of(snapshot: Snapshot) -> Snapshot:
    """The snapshot as it is written to the target: `original` kept or set, `parent` dropped."""
    return dataclasses.replace(
        snapshot,
        parent=None,
        original=persistent_id(snapshot),
        paths=list(snapshot.paths),
        excludes=list(snapshot.excludes),
        tags=list(snapshot.tags),
        safehold=dict(snapshot.safehold),
        extra=dict(snapshot.extra),
        id="",
    )


@dataclass(frozen=True)
class _Blob:
    id: str
    type: BlobType
    pack_id: str
    offset: int
    size: int  # plaintext


# ----- the copier -------------------------------------------------------------------------


class Copier:
    def __init__(
        self,
        source: Repository,
        target: Repository,
        *,
        progress: ProgressCallback | None = None,
        compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
        pack_size: int = DEFAULT_PACK_SIZE,
        workers: int = 4,
        index_every_packs: int = INDEX_EVERY_PACKS,
    ) -> None:
        if source.config.id == target.config.id:
            raise UsageError(
                f"the source and the target are the same repository (id {target.config.id[:10]})",
                hint="pass a different --from-repo",
            )
        self.source = source
        self.target = target
        self.progress = progress
        self.level = compression_level if target.config.version >= 2 else None
        self.pack_size = pack_size
        self.workers = max(1, workers)
        self.index_every_packs = max(1, index_every_packs)
        self.result = CopyResult()
        self._copied_done = 0
        self._count_lock = threading.Lock()

    def _report(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(Progress(phase, done, total))

    def run(self, refs: list[str] | None = None, *, dry_run: bool = False) -> CopyResult:
        """Copy the snapshots `refs` (all when empty) that the target lacks."""
        self.result = CopyResult(dry_run=dry_run)
        self.result.same_chunker = (
            self.source.config.chunker_polynomial == self.target.config.chunker_polynomial
        )
        with self.source.locked(exclusive=False), self.target.locked(exclusive=False):
            to_copy = self._select(refs or [])
            needed = self._plan_blobs(to_copy)
            if dry_run:
                self.result.copied = [CopiedSnapshot(s, None) for s in to_copy]
                return self.result
            self._copy_blobs(needed)
            missing = [blob.id for blob in needed if not self.target.index.has(blob.id)]
            if missing:
                raise IntegrityError(
                    f"{len(missing)} copied blob(s) are not in the target index after copying "
                    f"(first: {missing[0]}); no snapshot was written"
                )
            for number, snapshot in enumerate(to_copy, 1):
                self._report("write snapshots", number, len(to_copy))
                new_id = self._write_snapshot(snapshot)
                self.result.copied.append(CopiedSnapshot(snapshot, new_id))
            self.result.locks = protect_kept_objects(self.target)
        return self.result

    # ----- selection and planning -----------------------------------------------------------

    def _select(self, refs: list[str]) -> list[Snapshot]:
        listing = self.source.list_snapshots(include_wal=not refs)  # all: WAL batches too
        if refs:
            chosen = {self.source.find_snapshot(ref, listing).id for ref in refs}
            listing = [snapshot for snapshot in listing if snapshot.id in chosen]
        by_original: dict[str, list[Snapshot]] = {}
        for existing in self.target.list_snapshots(include_wal=True):
            if existing.original:
                by_original.setdefault(existing.original, []).append(existing)
            by_original.setdefault(existing.id, []).append(existing)  # identical copies too
        to_copy = []
        for snapshot in listing:
            match = next(
                (
                    other
                    for other in by_original.get(persistent_id(snapshot), [])
                    if same_snapshot(other, snapshot)
                ),
                None,
            )
            if match is not None:
                self.result.skipped.append(SkippedSnapshot(snapshot, match.id))
                continue
            to_copy.append(snapshot)
            # Two source snapshots that are copies of each other are copied once.
            by_original.setdefault(persistent_id(snapshot), []).append(snapshot)
        return to_copy

    def _plan_blobs(self, snapshots: list[Snapshot]) -> list[_Blob]:
        """Every blob the snapshots reach that the target lacks, in source pack order."""
        target_index = self.target.index
        visited: set[str] = set()
        needed: dict[str, _Blob] = {}

        def want(blob_id: str, blob_type: BlobType, snapshot: Snapshot) -> None:
            if blob_id in needed or target_index.has(blob_id):
                return
            location = next(
                (
                    loc
                    for loc in self.source.index.all_locations(blob_id)
                    if loc.blob.type is blob_type
                ),
                None,
            )
            if location is None:
                raise MissingObjectError(
                    f"{blob_type.value} blob {blob_id} used by snapshot {snapshot.short_id} is "
                    "not in the source's index; no snapshot was written",
                    hint="run `safehold check` on the source repository",
                )
            needed[blob_id] = _Blob(
                blob_id,
                blob_type,
                location.pack_id,
                location.blob.offset,
                location.blob.plaintext_length,
            )

        for number, snapshot in enumerate(snapshots, 1):
            self._report("scan snapshots", number - 1, len(snapshots))
            stack = [snapshot.tree]
            while stack:
                tree_id = stack.pop()
                if tree_id in visited:
                    continue
                visited.add(tree_id)
                want(tree_id, BlobType.TREE, snapshot)
                for node in self.source.load_tree(tree_id):
                    for blob_id in node.content or ():
                        want(blob_id, BlobType.DATA, snapshot)
                    if node.subtree:
                        stack.append(node.subtree)
        self._report("scan snapshots", len(snapshots), len(snapshots))
        for blob in needed.values():
            if blob.type is BlobType.TREE:
                self.result.tree_blobs += 1
            else:
                self.result.data_blobs += 1
            self.result.bytes_copied += blob.size
        return sorted(needed.values(), key=lambda blob: (blob.pack_id, blob.offset))

    # ----- copying blobs ------------------------------------------------------------------

    def _copy_blobs(self, blobs: list[_Blob]) -> None:
        if not blobs:
            return
        packer = Packer(self.target.master, self.target.write_pack, self.pack_size)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="copy")
        window = threading.BoundedSemaphore(self.workers * 2)
        inflight: deque[Future[None]] = deque()
        total = len(blobs)
        done = 0
        try:
            for blob in blobs:
                window.acquire()
                future = pool.submit(self._copy_one, packer, blob)
                future.add_done_callback(lambda _: window.release())
                inflight.append(future)
                while inflight and inflight[0].done():
                    inflight.popleft().result()
                    done += 1
                    self._report("copy blobs", done, total)
                if packer.finished_count >= self.index_every_packs:
                    self._commit(packer)
            while inflight:
                inflight.popleft().result()
                done += 1
                self._report("copy blobs", done, total)
            packer.flush()
            self._commit(packer)
        except Exception:
            # Keep what was completely written: verified and indexed, a rerun skips it.
            pool.shutdown(wait=True, cancel_futures=True)
            packer.close()
            with contextlib.suppress(SafeholdError):
                self._commit(packer)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            packer.close()
            self.result.bytes_stored += packer.bytes_written
            self.result.packs_written += packer.packs_written

    def _copy_one(self, packer: Packer, blob: _Blob) -> None:
        plaintext = self._read_source_blob(blob)
        packer.add(encode_blob(self.target.master, blob.id, blob.type, plaintext, self.level))

    def _read_source_blob(self, blob: _Blob) -> bytes:
        """Decrypt, decompress and verify; another copy of the blob is tried if one is bad."""
        last: SafeholdError | None = None
        for location in self.source.index.all_locations(blob.id):
            if location.blob.type is not blob.type:
                continue
            try:
                stored = self.source.read_blob_raw(location.pack_id, location.blob)
                return self.source.decode_blob_checked(location.pack_id, location.blob, stored)
            except (IntegrityError, MissingObjectError) as err:
                last = err
        detail = last.message if last is not None else "it is not in the source's index"
        raise IntegrityError(
            f"cannot copy {blob.type.value} blob {blob.id} from the source: {detail}; "
            "no snapshot was written to the target",
            hint="run `safehold check --read-data` on the source repository to see what is "
            "damaged and which snapshots it affects; copy the other snapshots by naming them",
        )

    # ----- committing and verifying -------------------------------------------------------

    def _commit(self, packer: Packer) -> None:
        """Verify the packs written since the last commit, then index them (and verify that)."""
        finished = packer.take_finished()
        if not finished:
            return
        for number, (pack_id, entries) in enumerate(finished.items(), 1):
            self._verify_pack(pack_id, entries)
            self.result.packs_verified += 1
            self._report("verify packs", number, len(finished))
        written = self.target.save_index(finished, [])
        self.result.index_files_written += len(written)
        indexed: dict[str, list[PackedBlob]] = {}
        for index_id in written:
            try:
                index_file = IndexFile.decode(self.target.load_unpacked(FileType.INDEX, index_id))
            except (ValueError, KeyError) as err:
                raise IntegrityError(
                    f"index/{index_id} just written is unreadable: {err}"
                ) from None
            indexed.update(index_file.packs)
        if indexed != finished:
            raise IntegrityError("an index file just written does not list the packs written")

    def _verify_pack(self, pack_id: str, entries: list[PackedBlob]) -> None:
        name = object_name(FileType.PACK, pack_id)
        backend = self.target.backend
        short = pack_id[:8]
        try:
            size = backend.stat(name).size
            body = sum(entry.length for entry in entries)
            header_length = header_length_from_trailer(
                backend.get_range(name, size - _TRAILER, _TRAILER)
            )
            if body + header_length + _TRAILER != size:
                raise IntegrityError(
                    f"pack {short} just written has {size} bytes, expected "
                    f"{body + header_length + _TRAILER}"
                )
            sealed = backend.get_range(name, body, header_length)
            header = decode_header(self.target.master.decrypt_object(sealed))
        except PackFormatError as err:
            raise IntegrityError(f"pack {short} just written is unreadable: {err}") from None
        except SafeholdError:
            raise
        except Exception as err:  # authentication failure of the header
            raise IntegrityError(
                f"pack {short} just written has an unreadable header ({err})"
            ) from None
        if header != entries:
            raise IntegrityError(f"pack {short} just written: its header does not match its blobs")
        sample = random.choice(entries)
        self.target.decode_blob_checked(pack_id, sample, self.target.read_blob_raw(pack_id, sample))

    def _write_snapshot(self, snapshot: Snapshot) -> str:
        copy = copy_of(snapshot)
        new_id = self.target.save_snapshot(copy)
        written = self.target.load_snapshot(new_id)
        if (written.tree, written.time.ns, written.original) != (
            snapshot.tree,
            snapshot.time.ns,
            persistent_id(snapshot),
        ):
            raise IntegrityError(
                f"snapshot {new_id[:8]} just written does not read back as written"
            )
        return new_id


def copy_snapshots(
    source: Repository,
    target: Repository,
    refs: list[str] | None = None,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    compression_level: int | None = DEFAULT_COMPRESSION_LEVEL,
    pack_size: int = DEFAULT_PACK_SIZE,
) -> CopyResult:
    """Copy the snapshots `refs` (all when None/empty) of `source` that `target` lacks."""
    copier = Copier(
        source,
        target,
        progress=progress,
        compression_level=compression_level,
        pack_size=pack_size,
    )
    return copier.run(refs, dry_run=dry_run)
