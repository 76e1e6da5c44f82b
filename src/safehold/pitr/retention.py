"""WAL retention: keep every WAL file a kept base backup needs, forget the batches that hold
only older ones (prune then frees their data).

A base backup needs the segments from its start segment on, on its timeline and on every
later timeline (a promotion continues from it). A segment older than the oldest kept base
backup's start (on that timeline or an earlier one) can never be replayed: it is not needed.
Timeline history files are tiny and always kept. A batch snapshot is forgotten only when
none of its files is needed, so a batch that straddles the boundary stays whole.

With no base backup at all nothing is forgotten: the archive may be filling up before the
first base backup, and nothing can tell which segments that one will need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safehold.backends.base import ObjectLockedError
from safehold.pitr.chain import BaseBackup, base_backups
from safehold.pitr.store import WalArchive, forget_names
from safehold.pitr.walnames import DEFAULT_SEGMENT_SIZE, parse_wal_name
from safehold.repo.format import FileType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot


@dataclass
class WalExpiry:
    """What WAL retention decided: the batches to forget and what they hold."""

    forget: list[Snapshot] = field(default_factory=list)
    files_forgotten: int = 0
    files_kept: int = 0
    oldest_needed: str | None = None  # the first segment the oldest kept base backup needs

    def to_json(self) -> dict[str, object]:
        return {
            "batches_forgotten": [snapshot.id for snapshot in self.forget],
            "files_forgotten": self.files_forgotten,
            "files_kept": self.files_kept,
            "oldest_needed": self.oldest_needed,
        }


def _needed(name: str, bases: list[BaseBackup]) -> bool:
    parsed = parse_wal_name(name)
    if parsed is None or parsed.kind == "history":
        return True
    for base in bases:
        size = base.segment_size or DEFAULT_SEGMENT_SIZE
        if parsed.timeline > base.timeline:
            return True
        if parsed.timeline == base.timeline and parsed.number(size) >= base.start_segment.number:
            return True
    return False


def plan_wal_expiry(archive: WalArchive, kept: list[Snapshot]) -> WalExpiry:
    """Decide, from the snapshots that stay (`kept`), which WAL batches may go."""
    bases = base_backups(kept)
    expiry = WalExpiry()
    if not bases:
        expiry.files_kept = sum(len(copies) for copies in archive.files.values())
        return expiry
    oldest = min(bases, key=lambda base: (base.timeline, base.start_lsn))
    expiry.oldest_needed = oldest.start_segment.name(oldest.segment_size)
    for batch in archive.batches:
        names = [entry.get("name") for entry in batch.safehold.get("wal") or []]
        names = [str(name) for name in names if name]
        if names and not any(_needed(name, bases) for name in names):
            expiry.forget.append(batch)
            expiry.files_forgotten += len(names)
        else:
            expiry.files_kept += len(names)
    return expiry


def forget_wal(repo: Repository, expiry: WalExpiry) -> list[str]:
    """Delete the batches `expiry` forgets, each with its `wal-names` records (they would
    point at nothing); returns the messages of batches still under Object Lock retention."""
    retained: list[str] = []
    for batch in expiry.forget:
        try:
            repo.delete(FileType.SNAPSHOT, batch.id)
        except ObjectLockedError as err:
            retained.append(err.message)
        else:
            forget_names(repo, batch)
    return retained
