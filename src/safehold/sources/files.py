"""Folders of user uploads (or any files): the engine's file trees, with excludes.

Each configured path becomes `/<source>/<its folder name>/` in the snapshot; a restore puts
those folders into a new target folder, bit-exact with metadata.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from safehold.errors import UsageError
from safehold.fs.archiver import BackupItem
from safehold.fs.restorer import RestoreOptions, Restorer
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions, Manifest, RestoreReport, item_path
from safehold.sources.process import SourceError


class FilesSource:
    kind = "files"

    def __init__(self, name: str, paths: list[Path], excludes: list[str] | None = None) -> None:
        self.name = name
        self.paths = [Path(os.path.abspath(path)) for path in paths]
        self.excludes = list(excludes or [])
        self._folders = folder_names(self.paths)

    def items(self) -> list[BackupItem]:
        items = []
        for path, folder in zip(self.paths, self._folders, strict=True):
            if not path.exists():
                raise SourceError(
                    f"source {self.name}: {path} does not exist",
                    hint="fix the path in the plan, or create the folder",
                )
            items.append(
                BackupItem(
                    item_path(self.name, folder),
                    real_path=os.fsencode(path),
                    parents_on_disk=False,
                    excludes=self.excludes,
                )
            )
        return items

    def manifest(self) -> Manifest:
        return {
            "paths": {
                folder: str(path) for path, folder in zip(self.paths, self._folders, strict=True)
            },
            "excludes": self.excludes,
        }

    def production_location(self) -> str:
        return ", ".join(str(path) for path in self.paths)

    def folder_for(self, target: str) -> str | None:
        """The snapshot folder name of the live folder `target`; None when it is not one."""
        resolved = Path(os.path.abspath(target))
        for path, folder in zip(self.paths, self._folders, strict=True):
            if path == resolved:
                return folder
        return None

    def is_production_target(self, target: str) -> bool:
        resolved = Path(os.path.abspath(target))
        for path in self.paths:
            if resolved == path or resolved in path.parents or path in resolved.parents:
                return True
        return False

    def restore(
        self,
        repo: Repository,
        snapshot: Snapshot,
        manifest: Manifest,
        target: str,
        *,
        overwrite: bool = False,
        accounts: AccountOptions = KEEP_ACCOUNTS,  # no accounts here: ignored
        only: frozenset[str] | None = None,
    ) -> RestoreReport:
        """Into a new folder: every backed-up folder under it. Onto production (`overwrite`):
        `target` must be one of the source's folders, which is restored in place (with
        `only`: just those paths of it, everything else there left as it is)."""
        started = time.monotonic()
        options = RestoreOptions(root=f"/{self.name}")
        if overwrite:
            resolved = Path(os.path.abspath(target))
            matches = [f for p, f in zip(self.paths, self._folders, strict=True) if p == resolved]
            if not matches:
                raise UsageError(
                    f"{target} is inside production but is not one of the source's folders",
                    hint=f"name one of: {self.production_location()}",
                )
            options = RestoreOptions(root=f"/{self.name}/{matches[0]}", force=True, only=only)
        stats = Restorer(repo, options).restore(snapshot, target)
        report = RestoreReport(self.name, target, time.monotonic() - started)
        what = "files" if only is None else "chosen files"
        report.summary.append(f"{stats.files} {what}, {stats.dirs} folders restored into {target}")
        report.details = {"files": stats.files, "dirs": stats.dirs, "bytes": stats.bytes_written}
        report.warnings = [f"{path}: {message}" for path, message in stats.errors]
        if stats.errors:
            raise UsageError(
                f"source {self.name}: {len(stats.errors)} item(s) could not be restored: "
                f"{stats.errors[0][0]}: {stats.errors[0][1]}",
                hint="run `safehold check --read-data` to see what is damaged",
            )
        return report


def folder_names(paths: list[Path]) -> list[str]:
    """Folder names in the snapshot: the last path component, made unique with -2, -3, ..."""
    names: list[str] = []
    for path in paths:
        base = path.name or "root"
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names
