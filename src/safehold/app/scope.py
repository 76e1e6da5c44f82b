"""What changed since a backup: the live data of each source against a snapshot.

Databases: per table, the rows now against the row counts the backup recorded in its
manifest (the counts a drill verifies). A count says how many, not which: `safehold db diff`
gives the row-level view by primary key. Files: the live folders against the snapshot's tree
by type, size and mtime, as a backup decides what changed (fs/livediff.py).

Used by `safehold incident start` (the scope) and by restores onto production (what they
would lose). Looks only; changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from safehold.errors import SafeholdError
from safehold.fs.livediff import ADDED, CHANGED, MISSING, LiveDiff, LiveEntry, compare_live
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.walk import find_node
from safehold.sources.base import CountingSource, Source, recorded_counts
from safehold.sources.files import FilesSource

SAMPLES = 10  # paths shown per kind of change


@dataclass(frozen=True)
class TableScope:
    database: str
    table: str
    backup_rows: int | None  # None: the table is new since the backup
    live_rows: int | None  # None: the table is gone
    several: bool = False  # the source has several databases: labels name the database

    @property
    def delta(self) -> int:
        return (self.live_rows or 0) - (self.backup_rows or 0)

    @property
    def label(self) -> str:
        return f"{self.database}.{self.table}" if self.several else self.table

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "table": self.table,
            "backup_rows": self.backup_rows,
            "live_rows": self.live_rows,
            "delta": self.delta,
        }


@dataclass
class SourceScope:
    source: str
    kind: str
    tables: list[TableScope] = field(default_factory=list)
    files: dict[str, int] | None = None  # missing/added/changed/newer/same counts
    samples: dict[str, list[str]] = field(default_factory=dict)  # status -> first paths
    error: str | None = None  # why the live data could not be compared
    note: str = ""
    baseline: str = ""  # the snapshot compared with (name, else short id)

    @property
    def changed_tables(self) -> list[TableScope]:
        return [
            t for t in self.tables if t.delta != 0 or t.live_rows is None or t.backup_rows is None
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "type": self.kind,
            "tables": [t.to_json() for t in self.tables],
            "files": self.files,
            "samples": self.samples,
            "error": self.error,
            "note": self.note,
            "baseline": self.baseline,
        }

    def lines(self) -> list[str]:
        """Human lines: the tables that differ (all when few), the file counts."""
        head = f"{self.source} ({self.kind})" + (f" since {self.baseline}" if self.baseline else "")
        if self.error:
            return [f"{head}: not compared: {self.error}"]
        if self.files is not None:
            counts = self.files
            lines = [
                f"{head}: {counts['missing']} file(s) removed, {counts['added']} added, "
                f"{counts['changed']} changed ({counts['newer']} newer than the backup), "
                f"{counts['same']} unchanged"
            ]
            for status, paths in self.samples.items():
                more = counts.get(status, 0) - len(paths)
                tail = f" (+{more} more)" if more > 0 else ""
                lines.append(f"  {status}: {', '.join(paths)}{tail}")
            return lines
        if not self.tables:
            return [f"{head}: {self.note or 'nothing to compare'}"]
        changed = self.changed_tables
        lines = [f"{head}: {len(changed)} of {len(self.tables)} table(s) differ in row count"]
        for table in self.tables:
            if table in changed or len(self.tables) <= 12:
                lines.append(f"  {table.label}: {_table_words(table)}")
        if self.note:
            lines.append(f"  {self.note}")
        return lines


def _table_words(table: TableScope) -> str:
    if table.backup_rows is None:
        return f"{table.live_rows or 0:,} rows now, new since the backup"
    if table.live_rows is None:
        return f"gone, {table.backup_rows:,} rows in the backup"
    sign = f"{table.delta:+,}" if table.delta else "same"
    return f"{table.live_rows:,} rows now, {table.backup_rows:,} in the backup ({sign})"


def source_manifest(snapshot: Snapshot, name: str) -> dict[str, Any] | None:
    manifests = snapshot.safehold.get("sources") or {}
    manifest = manifests.get(name)
    if not isinstance(manifest, dict) or manifest.get("failed"):
        return None
    return manifest


def table_scope(source: CountingSource, manifest: dict[str, Any]) -> list[TableScope]:
    """Rows now against the rows the backup recorded, per database and table (tables new
    since the backup, or gone, included). Raises SafeholdError when the live side cannot be
    counted."""
    recorded = recorded_counts(manifest)
    live = source.live_counts(sorted(recorded))
    tables: list[TableScope] = []
    for database in sorted(recorded):
        then, now = recorded[database], live.get(database, {})
        for table in sorted(set(then) | set(now)):
            tables.append(
                TableScope(database, table, then.get(table), now.get(table), len(recorded) > 1)
            )
    return tables


def files_scope(
    repo: Repository, snapshot: Snapshot, source: FilesSource, manifest: dict[str, Any]
) -> tuple[LiveDiff, dict[str, str]]:
    """The live folders of a files source against the snapshot; also the live folder of each
    folder name in the snapshot. Paths of entries are prefixed with the folder name when the
    source has several folders."""
    folders: dict[str, str] = {str(k): str(v) for k, v in (manifest.get("paths") or {}).items()}
    total = LiveDiff()
    for folder, live in folders.items():
        node, subtree = find_node(repo, snapshot.tree, f"/{source.name}/{folder}")
        if node is None or subtree is None:
            continue
        diff = compare_live(repo, subtree, live, source.excludes)
        prefix = f"{folder}/" if len(folders) > 1 else ""
        for entry in diff.entries:
            total.entries.append(_prefixed(entry, prefix))
        total.unreadable.extend(diff.unreadable)
    return total, folders


def _prefixed(entry: LiveEntry, prefix: str) -> LiveEntry:
    return replace(entry, path=prefix + entry.path) if prefix else entry


def source_scope(repo: Repository, snapshot: Snapshot, source: Source) -> SourceScope:
    """What changed in one source since `snapshot`; errors are reported, not raised."""
    scope = SourceScope(source.name, source.kind, baseline=snapshot.name or snapshot.short_id)
    manifest = source_manifest(snapshot, source.name)
    if manifest is None:
        scope.error = f"snapshot {snapshot.short_id} holds no good backup of it"
        return scope
    try:
        if isinstance(source, FilesSource):
            with repo.locked(exclusive=False):
                diff, _ = files_scope(repo, snapshot, source, manifest)
            scope.files = diff.counts()
            for status in (MISSING, CHANGED, ADDED):
                paths = [e.path for e in diff.of(status)][:SAMPLES]
                if paths:
                    scope.samples[status] = paths
            if diff.unreadable:
                scope.note = f"{len(diff.unreadable)} live folder(s) unreadable"
        elif isinstance(source, CountingSource):
            scope.tables = table_scope(source, manifest)
            scope.note = (
                f"which rows: safehold db diff {snapshot.name or snapshot.short_id} "
                f"--source {source.name}"
            )
        else:
            scope.note = f"a {source.kind} source: not compared (restore it elsewhere to compare)"
    except (SafeholdError, OSError) as err:
        scope.error = err.message if isinstance(err, SafeholdError) else str(err)
    return scope


def would_lose_rows(tables: list[TableScope]) -> list[TableScope]:
    """Tables with more rows now than in the backup: a restore over them loses at least the
    difference (rows written since the backup)."""
    return [t for t in tables if t.live_rows is not None and t.delta > 0]
