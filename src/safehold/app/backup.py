"""The backup use case: pick the parent snapshot, hold a shared lock, archive, name it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from safehold.errors import UsageError
from safehold.fs.archiver import (
    Archiver,
    BackupOptions,
    BackupResult,
    snapshot_path,
)
from safehold.policy.retention import REASONS
from safehold.repo.gotypes import GoTime, format_time
from safehold.repo.progress import ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot


@dataclass
class BackupRequest:
    paths: list[str]
    tags: list[str] = field(default_factory=list)
    reason: str = "manual"
    note: str | None = None
    name_prefix: str | None = None  # the plan's `<app>-<env>`; the hostname otherwise
    parent: str | None = None
    options: BackupOptions = field(default_factory=BackupOptions)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def snapshot_name(prefix: str, when: GoTime, reason: str, note: str | None) -> str:
    """`<prefix>-<YYYY-MM-DD>-<reason>[-<note>]`, e.g. myapp-prod-2026-01-14-predeploy-auth-fix."""
    name = f"{slug(prefix)}-{format_time(when)[:10]}-{reason}"
    if note and slug(note):
        name += f"-{slug(note)}"
    return name


def find_parent(repo: Repository, paths: list[str], snapshots: list[Snapshot]) -> Snapshot | None:
    """The newest snapshot of the same paths from this host, as restic chooses it."""
    wanted = sorted(snapshot_path(path) for path in paths)
    for snapshot in reversed(snapshots):
        if snapshot.hostname == repo.host.hostname and sorted(snapshot.paths) == wanted:
            return snapshot
    return None


def run_backup(
    repo: Repository, request: BackupRequest, progress: ProgressCallback | None = None
) -> BackupResult:
    if request.reason not in REASONS:
        raise UsageError(
            f"unknown reason {request.reason!r}", hint=f"use one of: {', '.join(REASONS)}"
        )
    with repo.locked(exclusive=False):
        snapshots = repo.list_snapshots()
        if request.parent:
            parent: Snapshot | None = repo.find_snapshot(request.parent, snapshots)
        else:
            parent = find_parent(repo, request.paths, snapshots)
        started = repo.clock()
        prefix = request.name_prefix or repo.host.hostname
        meta: dict[str, object] = {
            "name": snapshot_name(prefix, started, request.reason, request.note),
            "reason": request.reason,
        }
        if request.note:
            meta["note"] = request.note
        tags = list(dict.fromkeys([*request.tags, request.reason]))
        archiver = Archiver(repo, request.options, progress)
        return archiver.backup(
            request.paths, parent=parent, tags=tags, safehold_meta=meta, time=started
        )
