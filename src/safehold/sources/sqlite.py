"""SQLite databases, copied with SQLite's online backup API.

The backup API produces a consistent copy while the app keeps writing. The copy goes to a
temporary file (SQLite needs a database file to write into), is checked with
`PRAGMA integrity_check`, its tables counted, and then streamed into the snapshot as
`/<source>/<file name>`. Restore writes a NEW file: temp, fsync, integrity check, row counts
compared with the manifest, rename.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from safehold.errors import UsageError
from safehold.fs.archiver import BackupItem
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions, Manifest, RestoreReport, item_path
from safehold.sources.process import SourceError


def table_counts(connection: sqlite3.Connection) -> dict[str, int]:
    names = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {
        name: int(
            connection.execute(
                f'SELECT count(*) FROM "{name.replace(chr(34), 2 * chr(34))}"'
            ).fetchone()[0]
        )
        for name in names
    }


def integrity(connection: sqlite3.Connection) -> str:
    return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


class SqliteSource:
    kind = "sqlite"

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = Path(os.path.abspath(path))
        self._manifest: Manifest = {}

    @property
    def file_name(self) -> str:
        return self.path.name

    def items(self) -> list[BackupItem]:
        if not self.path.is_file():
            raise SourceError(
                f"source {self.name}: {self.path} is not a file",
                hint="fix the sqlite path in the plan",
            )
        return [BackupItem(item_path(self.name, self.file_name), stream=self._consistent_copy)]

    @contextmanager
    def _consistent_copy(self) -> Iterator[BinaryIO]:
        with tempfile.TemporaryDirectory(prefix="safehold-sqlite-") as scratch:
            copy = Path(scratch) / self.file_name
            try:
                source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
                try:
                    target = sqlite3.connect(copy)
                    with target:
                        source.backup(target)
                    check = integrity(target)
                    counts = table_counts(target)
                    version = sqlite3.sqlite_version
                    target.close()
                finally:
                    source.close()
            except sqlite3.Error as err:
                raise SourceError(
                    f"source {self.name}: cannot read {self.path}: {err}",
                    hint="check the path and that the file is a SQLite database",
                ) from None
            if check != "ok":
                raise SourceError(
                    f"source {self.name}: {self.path} fails integrity_check: {check}",
                    hint="the live database is damaged: repair it before backing up",
                )
            digest = hashlib.sha256(copy.read_bytes()).hexdigest()
            self._manifest = {
                "path": str(self.path),
                "file": self.file_name,
                "sqlite_version": version,
                "tables": counts,
                "size": copy.stat().st_size,
                "sha256": digest,
                "integrity_check": check,
            }
            with open(copy, "rb") as handle:
                yield handle

    def manifest(self) -> Manifest:
        return dict(self._manifest)

    def production_location(self) -> str:
        return str(self.path)

    def is_production_target(self, target: str) -> bool:
        resolved = Path(os.path.abspath(target))
        if resolved == self.path:
            return True
        try:
            return resolved.exists() and os.path.samefile(resolved, self.path)
        except OSError:
            return False

    def live_counts(self, databases: list[str]) -> dict[str, dict[str, int]]:
        """Row counts of the live file now (read-only), under its file name as the one
        database (the incident scope; restores to production say what they would lose)."""
        try:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            try:
                return {self.file_name: table_counts(connection)}
            finally:
                connection.close()
        except sqlite3.Error as err:
            raise SourceError(
                f"source {self.name}: cannot read {self.path}: {err}",
                hint="check the path and that the file is a SQLite database",
            ) from None

    def restore(
        self,
        repo: Repository,
        snapshot: Snapshot,
        manifest: Manifest,
        target: str,
        *,
        overwrite: bool = False,
        accounts: AccountOptions = KEEP_ACCOUNTS,  # no accounts here: ignored
    ) -> RestoreReport:
        started = time.monotonic()
        destination = Path(os.path.abspath(target))
        if destination.exists() and not overwrite:
            raise UsageError(
                f"{destination} already exists",
                hint="restore into a new file path; move the old one away first if you mean it",
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name}.safehold-restore")
        try:
            with open(temporary, "wb") as out:
                dump_file(
                    repo, snapshot, f"/{self.name}/{manifest.get('file', self.file_name)}", out
                )
                out.flush()
                os.fsync(out.fileno())
            connection = sqlite3.connect(temporary)
            try:
                check = integrity(connection)
                counts = table_counts(connection)
            finally:
                connection.close()
            if check != "ok":
                raise UsageError(f"the restored database fails integrity_check: {check}")
            if overwrite:  # stale WAL/journal files would be replayed onto the restored file
                for suffix in ("-wal", "-shm", "-journal"):
                    Path(f"{destination}{suffix}").unlink(missing_ok=True)
            os.rename(temporary, destination)
        finally:
            temporary.unlink(missing_ok=True)
        return _report(self.name, str(destination), manifest, counts, time.monotonic() - started)


def _report(
    name: str, target: str, manifest: Manifest, counts: dict[str, int], seconds: float
) -> RestoreReport:
    expected: dict[str, Any] = manifest.get("tables") or {}
    report = RestoreReport(name, target, seconds)
    for table, rows in counts.items():
        note = (
            "matches backup" if expected.get(table) == rows else f"backup had {expected.get(table)}"
        )
        report.summary.append(f"{table}: {rows:,} rows ({note})")
    verified = counts == expected
    report.details = {"tables": counts, "verified": verified}
    if not verified:
        report.warnings.append("row counts differ from those recorded at backup time")
    return report
