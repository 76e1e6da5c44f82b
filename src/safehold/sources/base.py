"""The source contract: back up into the snapshot tree, record a manifest, restore elsewhere.

Every source owns the folder `/<source name>/` of the snapshot tree. During a backup it
provides `BackupItem`s (files or folders on disk, or streams such as a database dump, read
without a full-size temporary file) and afterwards a manifest: what it needs to restore and to
verify later (server version, tables and row counts, checksums). The manifest is stored in the
snapshot's `safehold.sources.<name>` field.

Restores always go to a NEW place given by the user; `production_location()` lets the caller
refuse a target that is the source's own live location.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from safehold.fs.archiver import BackupItem
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

Manifest = dict[str, Any]


@dataclass
class RestoreReport:
    """What a source restore did, for the user: where, what, how long."""

    source: str
    target: str
    seconds: float = 0.0
    summary: list[str] = field(default_factory=list)  # e.g. "orders: 12,345 rows"
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AccountOptions:
    """What a database restore does with the accounts of the backup (`safehold restore
    --no-roles`, `--no-owner`). Sources without accounts (files, SQLite, ...) ignore it."""

    roles: bool = True  # create the roles/users the target lacks, then apply their grants
    owners: bool = True  # keep each object's owner (PostgreSQL; False: `pg_restore --no-owner`)


KEEP_ACCOUNTS = AccountOptions()


class Source(Protocol):
    name: str
    kind: str

    def items(self) -> list[BackupItem]:
        """What to read, placed under `/<name>/` in the snapshot tree."""
        ...

    def manifest(self) -> Manifest:
        """Called after every item was read successfully: what was backed up."""
        ...

    def production_location(self) -> str:
        """The live location this source reads (redacted form), for refusing restores."""
        ...

    def is_production_target(self, target: str) -> bool:
        """Whether restoring into `target` would overwrite the live data."""
        ...

    def restore(
        self,
        repo: Repository,
        snapshot: Snapshot,
        manifest: Manifest,
        target: str,
        *,
        overwrite: bool = False,
        accounts: AccountOptions = KEEP_ACCOUNTS,
    ) -> RestoreReport:
        """Restore this source from `snapshot` into `target` (a new place).

        `overwrite` is set only after the user confirmed a restore onto production and an
        evidence snapshot was taken: then an existing target is replaced. `accounts` says
        whether a database restore creates missing roles and keeps owners.
        """
        ...


@runtime_checkable
class IncrementalSource(Protocol):
    """A source that can skip what the parent snapshot already holds (a bucket: objects with
    the same ETag, size and LastModified). The plan backup calls `use_parent` with the
    source's manifest in the parent snapshot before `items()`; the items it then marks
    `unchanged` keep the parent's file nodes."""

    def use_parent(self, manifest: Manifest) -> None: ...


@runtime_checkable
class CountingSource(Protocol):
    """A database source that can count the rows of its live tables now."""

    def live_counts(self, databases: list[str]) -> dict[str, dict[str, int]]: ...


def recorded_counts(manifest: Manifest) -> dict[str, dict[str, int]]:
    """The row counts a database source recorded at backup time, per database then table
    (`databases.<db>.tables` of PostgreSQL and MySQL; a SQLite file's `tables` under its file
    name, the name `live_counts` uses)."""
    databases = manifest.get("databases")
    if isinstance(databases, dict):
        return {str(db): {str(t): int(n) for t, n in (info.get("tables") or {}).items()}
                for db, info in databases.items() if isinstance(info, dict)}  # fmt: skip
    tables = manifest.get("tables")
    if isinstance(tables, dict):
        return {
            str(manifest.get("file") or "database"): {str(t): int(n) for t, n in tables.items()}
        }
    return {}


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def valid_source_name(name: str) -> bool:
    """Source names become folder names in the snapshot: lowercase, digits, - and _."""
    return bool(_NAME.match(name))


def item_path(source: str, *parts: str) -> list[bytes]:
    """Tree components of a path inside a source's folder."""
    return [source.encode(), *(part.encode("utf-8", "surrogateescape") for part in parts)]
