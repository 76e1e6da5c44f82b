"""Any command whose standard output is the backup: a vendor export, a CRM dump, a script.

`notes` records what the vendor does NOT let you export, so the runbook can say so.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from safehold.errors import UsageError
from safehold.fs.archiver import BackupItem
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions, Manifest, RestoreReport, item_path
from safehold.sources.process import process_stream


class _HashingReader:
    """Passes reads through while hashing and counting them (for the manifest)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def readinto(self, buffer: memoryview) -> int:
        count = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self.digest.update(buffer[:count])
            self.size += count
        return int(count or 0)


class CommandSource:
    kind = "command"

    def __init__(
        self,
        name: str,
        command: str,
        *,
        filename: str | None = None,
        cwd: Path | None = None,
        timeout: float = 3600.0,
        notes: str = "",
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.name = name
        self.command = command
        self.filename = filename or f"{name}.out"
        self.cwd = cwd
        self.timeout = timeout
        self.notes = notes
        self._redact = redact
        self._manifest: Manifest = {}

    def items(self) -> list[BackupItem]:
        return [BackupItem(item_path(self.name, self.filename), stream=self._run)]

    @contextmanager
    def _run(self) -> Iterator[BinaryIO]:
        reader: _HashingReader | None = None
        with process_stream(
            ["/bin/sh", "-c", self.command],
            what=f"source {self.name} (command)",
            cwd=str(self.cwd) if self.cwd else None,
            timeout=self.timeout,
            redact=self._redact,
        ) as stream:
            reader = _HashingReader(stream)
            yield reader  # type: ignore[misc]
        self._manifest = {
            "command": self._redact(self.command),
            "file": self.filename,
            "size": reader.size,
            "sha256": reader.digest.hexdigest(),
            "notes": self.notes,
        }

    def manifest(self) -> Manifest:
        return dict(self._manifest)

    def production_location(self) -> str:
        return f"output of: {self._redact(self.command)}"

    def is_production_target(self, target: str) -> bool:
        return False  # a command's output is never written back anywhere by safehold

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
        if destination.is_dir():
            destination = destination / str(manifest.get("file", self.filename))
        if destination.exists():
            raise UsageError(f"{destination} already exists", hint="restore into a new path")
        digest = hashlib.sha256()
        with open(destination, "wb") as out:
            dump_file(repo, snapshot, f"/{self.name}/{manifest.get('file', self.filename)}", out)
        with open(destination, "rb") as check:
            while block := check.read(1 << 20):
                digest.update(block)
        report = RestoreReport(self.name, str(destination), time.monotonic() - started)
        verified = digest.hexdigest() == manifest.get("sha256")
        report.summary.append(
            f"{destination.name}: {destination.stat().st_size:,} bytes "
            f"({'checksum matches backup' if verified else 'checksum differs from backup'})"
        )
        if self.notes:
            report.summary.append(f"note: {self.notes}")
        report.details = {"verified": verified}
        return report
