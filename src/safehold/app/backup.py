"""The backup use case: pick the parent snapshot, hold a shared lock, archive, name it."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from safehold.app.holds import hold_if_evidence
from safehold.errors import UsageError
from safehold.fs.archiver import (
    Archiver,
    BackupOptions,
    BackupResult,
    snapshot_path,
)
from safehold.policy.retention import REASONS, reason_problem
from safehold.repo.gotypes import GoTime, format_time
from safehold.repo.objectlock import protect_kept_objects
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


def check_reason(reason: str) -> None:
    """UsageError (one line) unless `reason` is a valid reason; any such word is accepted."""
    problem = reason_problem(reason)
    if problem is not None:
        raise UsageError(problem, hint=f"known reasons: {', '.join(REASONS)}")


def unique_name(name: str, when: GoTime, taken: Collection[str | None]) -> str:
    """`name`, or when a snapshot of the repository already has it, `name-HHMM` (the local
    time taken), then `name-HHMM-2`, `-3`...: two snapshots never share a name. Checked under
    the shared backup lock, so two backups started in the very same minute can still race."""
    if name not in taken:
        return name
    stamped = f"{name}-{format_time(when)[11:16].replace(':', '')}"
    candidate, counter = stamped, 1
    while candidate in taken:
        counter += 1
        candidate = f"{stamped}-{counter}"
    return candidate


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
    check_reason(request.reason)
    with repo.locked(exclusive=False):
        snapshots = repo.list_snapshots()
        if request.parent:
            parent: Snapshot | None = repo.find_snapshot(request.parent, snapshots)
        else:
            parent = find_parent(repo, request.paths, snapshots)
        started = repo.clock()
        prefix = request.name_prefix or repo.host.hostname
        meta: dict[str, object] = {
            "name": unique_name(
                snapshot_name(prefix, started, request.reason, request.note),
                started,
                {snapshot.name for snapshot in snapshots},
            ),
            "reason": request.reason,
        }
        if request.note:
            meta["note"] = request.note
        tags = list(dict.fromkeys([*request.tags, request.reason]))
        archiver = Archiver(repo, request.options, progress)
        result = archiver.backup(
            request.paths, parent=parent, tags=tags, safehold_meta=meta, time=started
        )
        result.locks = protect_kept_objects(repo)
    hold_if_evidence(repo, result.snapshot)
    return result
