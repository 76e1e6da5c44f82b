"""Remove data that no snapshot references, under an exclusive lock.

Plan first (what to delete, what to repack), show it with dry-run, then execute in an order
that keeps the repository valid at every step:
  1. repack: copy the still-used blobs of mostly-unused packs into new packs;
  2. write a new index covering every kept and new pack (it supersedes all old index files);
  3. delete the old index files;
  4. delete the packs no index references any more (including orphans of killed backups).
A crash after step 2 leaves two valid indexes; after step 3, unreferenced packs that the next
prune removes. No step ever leaves a snapshot pointing at a blob without an indexed pack.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain

from safehold.backends.base import ObjectLockedError
from safehold.repo.format import FileType
from safehold.repo.objectlock import LockReport, protect_kept_objects
from safehold.repo.pack import EncodedBlob, PackedBlob
from safehold.repo.packer import Packer
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.walk import collect_used_blobs

REPACK_UNUSED_SHARE = 0.2  # repack a pack when at least this share of its bytes is unused
_SMALL_PACK = 1024 * 1024


@dataclass
class PrunePlan:
    used_blobs: int = 0
    unused_blobs: int = 0
    duplicate_blobs: int = 0
    delete_packs: list[str] = field(default_factory=list)
    repack_packs: list[str] = field(default_factory=list)
    keep_packs: list[str] = field(default_factory=list)
    orphan_packs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    bytes_repacked: int = 0
    index_files: list[str] = field(default_factory=list)
    missing_blobs: int = 0
    retained: list[str] = field(default_factory=list)  # deletions refused under Object Lock
    locks: LockReport | None = None  # the Object Lock extension after pruning (S3)
    # For each used blob, the one pack whose copy is kept: repacking copies only those.
    claimed_in: dict[str, str] = field(default_factory=dict)

    @property
    def has_work(self) -> bool:
        return bool(self.delete_packs or self.repack_packs or self.orphan_packs)


def plan_prune(repo: Repository) -> PrunePlan:
    """Decide what to delete and repack; reads everything, changes nothing."""
    index = repo.reload_index()
    plan = PrunePlan(index_files=repo.list_ids(FileType.INDEX))
    snapshots = repo.list_snapshots(include_wal=True)  # WAL batches keep their blobs
    trees, data = collect_used_blobs(repo, [snapshot.tree for snapshot in snapshots])
    used = trees | data
    plan.missing_blobs = sum(1 for blob in used if not index.has(blob))
    stored_sizes = {info.name.rsplit("/", 1)[-1]: info.size for info in repo.backend.list("data/")}
    claimed: set[str] = set()
    for pack_id in sorted(index.packs):
        if pack_id not in stored_sizes:
            continue  # check reports it; nothing to delete
        blobs = index.packs[pack_id]
        keep_bytes = 0
        drop_bytes = 0
        for blob in blobs:
            if blob.id in used and blob.id not in claimed:
                claimed.add(blob.id)
                keep_bytes += blob.length
                plan.used_blobs += 1
            else:
                drop_bytes += blob.length
                if blob.id in used:
                    plan.duplicate_blobs += 1
                else:
                    plan.unused_blobs += 1
        size = stored_sizes[pack_id]
        if keep_bytes == 0:
            plan.delete_packs.append(pack_id)
            plan.bytes_freed += size
        elif drop_bytes and (
            drop_bytes >= REPACK_UNUSED_SHARE * (keep_bytes + drop_bytes) or size < _SMALL_PACK
        ):
            plan.repack_packs.append(pack_id)
            plan.bytes_freed += drop_bytes
            plan.bytes_repacked += keep_bytes
        else:
            plan.keep_packs.append(pack_id)
    plan.orphan_packs = sorted(set(stored_sizes) - set(index.packs))
    plan.bytes_freed += sum(stored_sizes[p] for p in plan.orphan_packs)
    plan.claimed_in = _claims(index.packs, used)
    return plan


def _claims(packs: Mapping[str, list[PackedBlob]], used: set[str]) -> dict[str, str]:
    """For each used blob, the one pack (first in id order) whose copy is kept."""
    owner: dict[str, str] = {}
    for pack_id in sorted(packs):
        for blob in packs[pack_id]:
            if blob.id in used and blob.id not in owner:
                owner[blob.id] = pack_id
    return owner


class _KeptPacks(Mapping[str, list[PackedBlob]]):
    """The packs of the new index: the index's packs but the removed ones, then the new
    packs; values are built on access, so the new index is written one file at a time."""

    def __init__(
        self,
        packs: Mapping[str, list[PackedBlob]],
        removed: set[str],
        new: dict[str, list[PackedBlob]],
    ) -> None:
        self._packs = packs
        self._removed = removed
        self._new = new

    def __getitem__(self, pack_id: str) -> list[PackedBlob]:
        if pack_id in self._new:
            return self._new[pack_id]
        if pack_id in self._removed:
            raise KeyError(pack_id)
        return self._packs[pack_id]

    def __iter__(self) -> Iterator[str]:
        kept = (pack_id for pack_id in self._packs if pack_id not in self._removed)
        return chain(kept, (pack_id for pack_id in self._new if pack_id not in self._packs))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def remove_interrupted_writes(repo: Repository) -> int:
    """Delete the `.tmp-*` files of writes that a killed process never finished: listing skips
    them, so nothing else ever would. Only under the exclusive lock, when no writer is live."""
    if not repo.backend.capabilities.cleans_temp_files:
        return 0
    return repo.backend.cleanup_temp_files()


def execute_prune(
    repo: Repository, plan: PrunePlan, progress: ProgressCallback | None = None
) -> None:
    """Carry out a plan made by plan_prune under the same exclusive lock."""
    index = repo.index
    owner = plan.claimed_in
    packer = Packer(repo.master, repo.write_pack)
    for number, pack_id in enumerate(plan.repack_packs, 1):
        if progress:
            progress(Progress("repack", number, len(plan.repack_packs)))
        for blob in index.packs[pack_id]:
            if owner.get(blob.id) != pack_id:
                continue
            stored = repo.read_blob_raw(pack_id, blob)
            repo.decode_blob_checked(pack_id, blob, stored)  # never copy damage forward
            packer.add(EncodedBlob(blob.id, blob.type, stored, blob.uncompressed_length))
    try:
        packer.flush()
    finally:
        packer.close()
    new_packs = packer.take_finished()
    removed = set(plan.delete_packs) | set(plan.repack_packs)
    # Kept packs stay indexed whole: the index must list exactly what each pack header holds.
    kept = _KeptPacks(index.packs, removed, new_packs)
    old_index_files = repo.load_index_files()
    repo.save_index(kept, supersedes=plan.index_files)
    still_listed: set[str] = set()  # packs named by an old index the storage keeps (locked)
    for index_id in plan.index_files:
        try:
            repo.delete(FileType.INDEX, index_id)
        except ObjectLockedError as err:
            plan.retained.append(err.message)
            if index_id in old_index_files:
                still_listed.update(old_index_files[index_id].pack_ids)
    doomed = sorted(removed | set(plan.orphan_packs))
    for number, pack_id in enumerate(doomed, 1):
        if progress:
            progress(Progress("delete", number, len(doomed)))
        if pack_id in still_listed:
            continue  # deleting it would leave that index pointing at nothing
        try:
            repo.delete(FileType.PACK, pack_id)
        except ObjectLockedError as err:
            plan.retained.append(err.message)
    repo.reload_index()
    plan.locks = protect_kept_objects(repo)
