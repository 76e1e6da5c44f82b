"""`safehold repair index`: rebuild the index from the pack headers, as `restic repair index`.

The index is derived data: every pack file ends with an encrypted header that lists its blobs.
Repair reads every index file it can; a pack that an intact index file describes (with the
size that description implies) keeps its entries, every other pack's header is read (all of
them with `read_all_packs`). Then it writes new index files for every readable pack and deletes
every old index file, damaged ones included. Under an exclusive lock; a crash between the two
steps leaves the new index next to old files, which the next repair (or prune) replaces.

A pack whose header cannot be read is left out and named: no index can say what it holds
(restic's `repair packs` territory); `prune` later removes it as unreferenced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safehold.errors import SafeholdError
from safehold.repo.check import expected_pack_size
from safehold.repo.crypto import AuthenticationError
from safehold.repo.format import FileType, object_name
from safehold.repo.index import IndexFile, split_into_index_files
from safehold.repo.pack import (
    PackedBlob,
    PackFormatError,
    decode_header,
    header_length_from_trailer,
)
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository

_TRAILER = 4


@dataclass
class RepairIndexReport:
    index_files_read: int = 0
    damaged_index_files: list[str] = field(default_factory=list)  # "index/<id>: why"
    packs: int = 0  # packs in the new index
    blobs: int = 0
    packs_read: int = 0  # headers read from storage
    unreadable_packs: list[str] = field(default_factory=list)  # "data/../<id>: why"
    missing_packs: int = 0  # in an old index file, gone from the storage
    written: list[str] = field(default_factory=list)  # new index ids (none on dry run)
    removed: list[str] = field(default_factory=list)  # old index ids deleted
    dry_run: bool = False


def read_pack_header(repo: Repository, pack_id: str, size: int) -> list[PackedBlob]:
    """The blobs of a stored pack from its own header (two ranged reads, not the whole pack);
    raises ValueError saying why it cannot be read."""
    name = object_name(FileType.PACK, pack_id)
    if size < _TRAILER:
        raise PackFormatError(f"only {size} bytes: too short to be a pack")
    length = header_length_from_trailer(repo.backend.get_range(name, size - _TRAILER, _TRAILER))
    if length + _TRAILER > size:
        raise PackFormatError("the header length exceeds the pack size")
    sealed = repo.backend.get_range(name, size - _TRAILER - length, length)
    try:
        entries = decode_header(repo.master.decrypt_object(sealed))
    except AuthenticationError:
        raise PackFormatError("its header is corrupt (authentication failed)") from None
    if entries and entries[-1].offset + entries[-1].length != size - _TRAILER - length:
        raise PackFormatError("its header does not describe the pack's data")
    return entries


def repair_index(
    repo: Repository,
    *,
    read_all_packs: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> RepairIndexReport:
    """Rebuild the index (see the module text); the caller holds an exclusive lock."""
    report = RepairIndexReport(dry_run=dry_run)
    old_ids = repo.list_ids(FileType.INDEX)
    known: dict[str, list[PackedBlob]] = {}
    for index_id in old_ids:
        try:
            index_file = IndexFile.decode(repo.load_unpacked(FileType.INDEX, index_id))
        except (SafeholdError, ValueError, KeyError, TypeError, AttributeError) as err:
            message = str(err).removeprefix(f"index/{index_id} is ")
            report.damaged_index_files.append(f"index/{index_id}: {message}")
            continue
        report.index_files_read += 1
        for pack_id, blobs in index_file.packs.items():
            known.setdefault(pack_id, list(blobs))
    stored = {info.name.rsplit("/", 1)[-1]: info.size for info in repo.backend.list("data/")}
    report.missing_packs = sum(1 for pack_id in known if pack_id not in stored)
    packs: dict[str, list[PackedBlob]] = {}
    for number, (pack_id, size) in enumerate(sorted(stored.items()), 1):
        if progress:
            progress(Progress("packs", number, len(stored)))
        indexed = known.get(pack_id)
        if indexed and not read_all_packs and expected_pack_size(list(indexed)) == size:
            packs[pack_id] = indexed
            continue
        repo.check_lock()
        try:
            packs[pack_id] = read_pack_header(repo, pack_id, size)
        except (ValueError, SafeholdError) as err:
            report.unreadable_packs.append(f"{object_name(FileType.PACK, pack_id)}: {err}")
            continue
        report.packs_read += 1
    report.packs = len(packs)
    report.blobs = sum(len(blobs) for blobs in packs.values())
    if dry_run:
        return report
    files = list(split_into_index_files(packs)) or [IndexFile()]
    files[0].supersedes = list(old_ids)
    for index_file in files:
        repo.check_lock()
        report.written.append(repo.save_unpacked(FileType.INDEX, index_file.encode()))
    for index_id in old_ids:
        if index_id not in report.written:
            repo.delete(FileType.INDEX, index_id)
            report.removed.append(index_id)
    repo.reload_index()
    return report
