"""WAL files in the repository: each push is one snapshot tagged `safehold-wal`.

A batch snapshot's tree is `/wal/<file name>` for every WAL file of the batch (segments,
timeline history files, backup history files), so the bytes are chunked, deduplicated,
compressed and encrypted exactly like any backup, and restic can restore them
(`restic restore <id> --target . ` or `restic dump <id> /wal/<name>`). Its `safehold` field
lists the files (`wal`: name, size, sha256, when PostgreSQL handed it over, the cluster's
system identifier and segment size) so the archive is known without reading a tree.

Durability: `push_files` returns only after the snapshot is written (after its packs and
index), each write fsync'd by the local backend or acknowledged by the object store.

Lookup by name: after each batch, every file of it gets a named record `wal-names`
(repo/records.py: `safehold/wal-names/<HMAC of the name>`, encrypted) naming its SHA-256 and
batch snapshot. A push that is not given the whole archive (`wal-push %p`, one process per
segment) checks each name with one GET (and one stat that the batch still exists), not by
listing every batch: its cost does not grow with the archive. The records are a lookup
aid, the snapshots stay the truth: a repository that has WAL batches but not yet the
`wal-names` records (archived before they existed) is read once in full and given them.

Before a batch is written, each new name gets an *intent* record (its SHA-256, no snapshot
yet), replaced by the full record once the batch is stored. A crash between the batch and its
records leaves the intent: a later push of the same content stores it again (a duplicate with
the same content is harmless), and a push of OTHER content under that name reads the whole
archive (rare: only after such a crash) to tell whether the earlier batch was written, and
fails loudly if it was. So "different content under the same name fails" holds across crashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from safehold.backends.base import ObjectLockedError
from safehold.fs.archiver import Archiver, BackupItem, BackupOptions
from safehold.pitr.errors import PitrError, WalConflictError
from safehold.pitr.walnames import WalName, parse_wal_name, read_segment_header, require_wal_name
from safehold.repo.format import FileType
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import WAL_TAG, Snapshot, is_wal_batch
from safehold.repo.walk import find_node

WAL_ROOT = "wal"
WAL_NAMES = "wal-names"  # named records: WAL file name -> where it is stored
_NAMES_COMPLETE = ""  # the key of the record that says every stored file has its record
_HISTORY_INLINE = 64 * 1024
# zstd level for WAL: level 1 takes about a quarter less CPU than the backups' 3 on pgbench
# WAL and stores 3% more (bench/wal_bench.py); archiving must keep up, on a busy server's cores
WAL_COMPRESSION_LEVEL = 1


@dataclass(frozen=True)
class WalFile:
    """A WAL file on disk, about to be pushed."""

    name: str
    path: Path
    size: int
    sha256: str
    handed_over: float  # when PostgreSQL gave it to us (epoch seconds)
    system_identifier: int | None = None
    segment_size: int | None = None
    data: bytes | None = field(default=None, repr=False)  # the bytes, when read into memory

    @property
    def parsed(self) -> WalName:
        return require_wal_name(self.name)


@dataclass(frozen=True)
class StoredWal:
    """A WAL file in the repository (one entry of a batch snapshot's `wal` list)."""

    name: str
    size: int
    sha256: str
    archived_at: float
    snapshot_id: str
    system_identifier: int | None = None
    segment_size: int | None = None
    content: str | None = None  # timeline history files: their text

    @property
    def parsed(self) -> WalName:
        return require_wal_name(self.name)


def describe_file(
    path: Path, name: str | None = None, handed_over: float | None = None, *, keep: bool = False
) -> WalFile:
    """Read a WAL file once: its size, SHA-256 and (for a segment) its header. With `keep`,
    the bytes are kept (WalFile.data) and stored from memory, not read again from `path`."""
    name = name or path.name
    parsed = require_wal_name(name)
    digest = hashlib.sha256()
    size = 0
    head = b""
    kept: list[bytes] = []
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                if not head:
                    head = chunk[:40]
                digest.update(chunk)
                size += len(chunk)
                if keep:
                    kept.append(chunk)
            stat = os.fstat(handle.fileno())
    except OSError as err:
        raise PitrError(
            f"cannot read WAL file {path}: {err.strerror}",
            hint="archive_command passes the path relative to the data folder as %p",
        ) from None
    sysid = seg_size = None
    if parsed.kind in ("segment", "partial"):
        header = read_segment_header(head)
        if header is None:
            raise PitrError(f"{path} does not start with a WAL page header: not a WAL segment")
        if parsed.kind == "segment" and size != header.segment_size:
            raise PitrError(
                f"{path} is {size} bytes, its header says segments are {header.segment_size}: "
                "refused (a segment still being written, or truncated)",
                hint="a segment is archived only once it is complete: is this the right file?",
            )
        sysid, seg_size = header.system_identifier, header.segment_size
    return WalFile(
        name, path, size, digest.hexdigest(),
        handed_over if handed_over is not None else stat.st_mtime, sysid, seg_size,
        b"".join(kept) if keep else None,
    )  # fmt: skip


def _entries(snapshot: Snapshot) -> list[StoredWal]:
    listed = snapshot.safehold.get("wal")
    found = []
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or parse_wal_name(str(entry.get("name"))) is None:
            continue
        found.append(
            StoredWal(
                str(entry["name"]), int(entry.get("size") or 0), str(entry.get("sha256") or ""),
                float(entry.get("archived_at") or snapshot.time.to_datetime().timestamp()),
                snapshot.id, entry.get("system_identifier"), entry.get("segment_size"),
                entry.get("content") if isinstance(entry.get("content"), str) else None,
            )
        )  # fmt: skip
    return found


@dataclass
class WalArchive:
    """Every WAL file the repository holds, by name (a name may be stored more than once,
    always with the same content: a re-push after a crash)."""

    files: dict[str, list[StoredWal]] = field(default_factory=dict)
    batches: list[Snapshot] = field(default_factory=list)

    @classmethod
    def load(cls, repo: Repository) -> WalArchive:
        archive = cls()
        for snapshot in repo.list_snapshots(include_wal=True):
            if is_wal_batch(snapshot):
                archive.batches.append(snapshot)
                for entry in _entries(snapshot):
                    archive.files.setdefault(entry.name, []).append(entry)
        return archive

    def get(self, name: str) -> StoredWal | None:
        copies = self.files.get(name)
        return copies[0] if copies else None

    def newest_archived(self) -> float | None:
        times = [copies[0].archived_at for copies in self.files.values() if copies]
        return max(times) if times else None


def _record_of(stored: StoredWal) -> dict[str, Any]:
    document: dict[str, Any] = {
        "sha256": stored.sha256, "size": stored.size, "snapshot": stored.snapshot_id,
        "archived_at": stored.archived_at,
    }  # fmt: skip
    if stored.system_identifier is not None:
        document["system_identifier"] = stored.system_identifier
        document["segment_size"] = stored.segment_size
    return document


def record_names(repo: Repository, stored: Iterable[StoredWal]) -> None:
    """Write the `wal-names` record of each stored file (see the module docstring)."""
    for entry in stored:
        repo.save_named_record(WAL_NAMES, entry.name, _record_of(entry))


def _ensure_names(repo: Repository) -> None:
    """Give an archive from before the `wal-names` records its records (once)."""
    if repo.load_named_record(WAL_NAMES, _NAMES_COMPLETE) is not None:
        return
    archive = WalArchive.load(repo)
    record_names(repo, (copies[-1] for copies in archive.files.values() if copies))
    repo.save_named_record(WAL_NAMES, _NAMES_COMPLETE, {"complete": True})


def lookup(repo: Repository, name: str) -> StoredWal | None:
    """Where WAL file `name` is stored, from its `wal-names` record (one GET), checked that its
    batch snapshot still exists (one stat); None when it is not stored. An intent record
    whose batch may or may not have been written is settled from the archive itself."""
    document = repo.load_named_record(WAL_NAMES, name)
    if document is None:
        return None
    if document.get("intent"):
        return _settle_intent(repo, name, document)
    if not repo.has_object(FileType.SNAPSHOT, str(document.get("snapshot"))):
        return None  # its batch was forgotten by retention
    return StoredWal(
        name, int(document.get("size") or 0), str(document.get("sha256") or ""),
        float(document.get("archived_at") or 0.0), str(document["snapshot"]),
        document.get("system_identifier"), document.get("segment_size"),
    )  # fmt: skip


def forget_names(repo: Repository, batch: Snapshot) -> int:
    """Delete the `wal-names` records that point at `batch`, a WAL batch snapshot just
    forgotten; returns how many. A record pointing elsewhere (the name was stored again) or
    an intent (a push in flight) is left alone: lookup settles those from the archive. A
    record still under Object Lock retention stays; lookup finds its batch gone."""
    removed = 0
    for entry in _entries(batch):
        record_id = repo.named_record_id(WAL_NAMES, entry.name)
        document = repo.load_named_record(WAL_NAMES, entry.name)
        if (
            document is not None
            and not document.get("intent")
            and (document.get("snapshot") == batch.id)
        ):
            with contextlib.suppress(ObjectLockedError):
                repo.delete_record(WAL_NAMES, record_id)
                removed += 1
    return removed


def _settle_intent(repo: Repository, name: str, document: dict[str, Any]) -> StoredWal | None:
    """A push crashed between its intent and its record: read the archive (the truth) once
    for this name, and repair the record when the batch is there."""
    stored = WalArchive.load(repo).get(name)
    if stored is not None:
        record_names(repo, [stored])
    return stored


def record_intents(repo: Repository, files: Iterable[WalFile]) -> None:
    """Say, before a batch is written, which content each new name is about to get."""
    for wal in files:
        repo.save_named_record(WAL_NAMES, wal.name, {"intent": True, "sha256": wal.sha256})


@dataclass
class PushResult:
    stored: list[str] = field(default_factory=list)  # newly written
    already: list[str] = field(default_factory=list)  # same name, same content: nothing to do
    snapshot: Snapshot | None = None


def push_files(
    repo: Repository,
    files: Iterable[WalFile],
    archive: WalArchive | None = None,
    options: BackupOptions | None = None,
) -> PushResult:
    """Store `files` in ONE batch snapshot. A file already stored with the same content is
    skipped (so a re-push after a crash succeeds); the same name with other content raises
    WalConflictError before anything is written.

    With `archive` (a long-running pusher loaded it once) names are checked in memory;
    without, each name is looked up by its `wal-names` record and the repository's index is
    not read (Repository.write_without_index): the cost of a push does not depend on how
    much the repository holds."""
    if archive is None:
        _ensure_names(repo)
        repo.write_without_index()
    result = PushResult()
    new: list[WalFile] = []
    for wal in files:
        if archive is not None:
            copies = archive.files.get(wal.name, [])
        else:
            found = lookup(repo, wal.name)
            copies = [found] if found is not None else []
        if any(copy.sha256 == wal.sha256 for copy in copies):
            result.already.append(wal.name)
            continue
        if copies:
            raise WalConflictError(
                f"{wal.name} is already archived with OTHER content "
                f"(sha256 {copies[0].sha256[:12]}…, this file {wal.sha256[:12]}…)"
            )
        if wal.name not in {pending.name for pending in new}:
            new.append(wal)
    if not new:
        return result
    items = [
        BackupItem(
            [WAL_ROOT.encode(), wal.name.encode()],
            stream=_opener(wal.path, wal.data),
            parents_on_disk=False,
        )
        for wal in new
    ]
    entries: list[dict[str, Any]] = []
    for wal in new:
        entry: dict[str, Any] = {
            "name": wal.name, "size": wal.size, "sha256": wal.sha256,
            "archived_at": round(wal.handed_over, 3),
        }  # fmt: skip
        if wal.system_identifier is not None:
            entry["system_identifier"] = wal.system_identifier
            entry["segment_size"] = wal.segment_size
        if wal.parsed.kind == "history" and wal.size <= _HISTORY_INLINE:
            # a few lines (parent timeline, switch LSN, reason): the chain follows timelines
            # from the snapshot files alone
            raw = wal.data if wal.data is not None else wal.path.read_bytes()
            entry["content"] = raw.decode(errors="replace")
        entries.append(entry)
    meta: dict[str, object] = {"kind": "wal", "wal": entries}
    record_intents(repo, new)
    with repo.locked(exclusive=False):
        # no reader processes: segments are 16 MiB (chunked on threads), and a push is
        # too short to pay for forking them
        options = options or BackupOptions(
            file_workers=2, compression_level=WAL_COMPRESSION_LEVEL, file_processes=0
        )
        archiver = Archiver(repo, options, None)
        backup = archiver.backup_items(
            items, paths=[f"/{WAL_ROOT}"], tags=[WAL_TAG], safehold_meta=meta
        )
    if backup.stats.errors:  # a file vanished or could not be read: nothing is acknowledged
        path, message = backup.stats.errors[0]
        raise PitrError(f"could not store {path}: {message}")
    result.stored = [wal.name for wal in new]
    result.snapshot = backup.snapshot
    stored_now = _entries(backup.snapshot)
    record_names(repo, stored_now)
    if archive is not None:
        for stored in stored_now:
            archive.files.setdefault(stored.name, []).append(stored)
        archive.batches.append(backup.snapshot)
    return result


def _opener(path: Path, data: bytes | None) -> Any:
    def open_file() -> BinaryIO:
        return io.BytesIO(data) if data is not None else open(path, "rb")

    return open_file


def fetch_file(repo: Repository, stored: StoredWal, out: BinaryIO) -> int:
    """Write one stored WAL file to `out`, checking its SHA-256; returns its size."""
    snapshot = repo.load_snapshot(stored.snapshot_id)
    node, _ = find_node(repo, snapshot.tree, f"/{WAL_ROOT}/{stored.name}")
    if node is None or node.type != "file":
        raise PitrError(f"{stored.name} is missing from WAL batch {stored.snapshot_id[:8]}")
    digest = hashlib.sha256()
    size = 0
    for blob_id in node.content or []:
        data = repo.load_blob(blob_id, BlobType.DATA)
        digest.update(data)
        out.write(data)
        size += len(data)
    if stored.sha256 and digest.hexdigest() != stored.sha256:
        raise PitrError(f"{stored.name} read back from the repository does not match its SHA-256")
    return size


def fetch_to_folder(repo: Repository, files: Iterable[StoredWal], folder: Path) -> int:
    """Write WAL files into `folder` (each via a temp name, then renamed); returns bytes."""
    total = 0
    for stored in files:
        tmp = folder / f".{stored.name}.tmp"
        with open(tmp, "wb") as handle:
            total += fetch_file(repo, stored, handle)
        tmp.rename(folder / stored.name)
    return total


def now() -> float:
    return time.time()
