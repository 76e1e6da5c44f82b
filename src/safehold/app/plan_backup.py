"""Back up every source of a plan into ONE snapshot (restores: `app/restore.py`).

A source that fails does not stop the others: its data is left out, the snapshot is marked
incomplete with the failure, and the caller exits non-zero naming the source and the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safehold.app.backup import check_reason, slug, snapshot_name, unique_name
from safehold.app.holds import hold_if_evidence
from safehold.errors import SafeholdError, UsageError
from safehold.fs.archiver import Archiver, BackupItem, BackupOptions, BackupStats
from safehold.repo.objectlock import LockReport, protect_kept_objects
from safehold.repo.progress import ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.walk import find_node, walk_tree
from safehold.sources.base import IncrementalSource, Source
from safehold.sources.from_plan import build_sources

if TYPE_CHECKING:
    from safehold.plan.models import Plan

Redact = Callable[[str], str]


@dataclass
class SourceOutcome:
    name: str
    kind: str
    ok: bool
    error: str | None = None
    files: int = 0
    bytes: int = 0


@dataclass
class PlanBackupResult:
    snapshot: Snapshot
    stats: BackupStats
    outcomes: list[SourceOutcome] = field(default_factory=list)
    locks: LockReport | None = None  # the Object Lock extension that followed (S3)

    @property
    def failed(self) -> list[SourceOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


def run_plan_backup(
    repo: Repository,
    sources: list[Source],
    *,
    app: str,
    env: str,
    reason: str,
    note: str | None = None,
    redact: Redact = lambda text: text,
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
) -> PlanBackupResult:
    check_reason(reason)
    if not sources:
        raise UsageError("the plan has no sources", hint="add a [[sources]] section")
    failures: dict[str, str] = {}
    items: list[BackupItem] = []
    parent = _latest_plan_snapshot(repo, app, env)
    for source in sources:
        try:
            if isinstance(source, IncrementalSource):
                source.use_parent(_parent_manifest(parent, source.name))
            items.extend(source.items())
        except SafeholdError as err:
            failures[source.name] = redact(err.message)
    outcomes: list[SourceOutcome] = []

    def finalize(stats: BackupStats, root_tree: str) -> dict[str, object]:
        _attribute_errors(stats, sources, items, failures, redact)
        manifests: dict[str, Any] = {}
        for source in sources:
            outcome = SourceOutcome(source.name, source.kind, source.name not in failures)
            if outcome.ok:
                try:
                    manifests[source.name] = {"kind": source.kind, **source.manifest()}
                except SafeholdError as err:
                    failures[source.name] = redact(err.message)
                    outcome.ok = False
            if not outcome.ok:
                outcome.error = failures[source.name]
                manifests[source.name] = {"kind": source.kind, "failed": outcome.error}
            else:
                outcome.files, outcome.bytes = _count(repo, root_tree, source.name)
            outcomes.append(outcome)
        meta: dict[str, object] = {"sources": manifests, "complete": not failures}
        if failures:
            meta["failed_sources"] = sorted(failures)
        if stats.errors:  # stored in the snapshot: a source's message may echo its location
            meta["errors"] = [redact(f"{path}: {message}") for path, message in stats.errors[:100]]
        return meta

    with repo.locked(exclusive=False):
        started = repo.clock()
        meta: dict[str, object] = {
            "name": unique_name(
                snapshot_name(f"{app}-{env}", started, reason, note),
                started,
                {snapshot.name for snapshot in repo.list_snapshots()},
            ),
            "reason": reason,
            "app": app,
            "env": env,
        }
        if note:
            meta["note"] = note
        archiver = Archiver(repo, options or BackupOptions(), progress)
        result = archiver.backup_items(
            [item for item in items if item.components[0].decode() not in failures],
            paths=[f"/{source.name}" for source in sources],
            parent=parent,
            tags=[reason, f"app={slug(app)}", f"env={slug(env)}"],
            safehold_meta=meta,
            time=started,
            finalize_meta=finalize,
            sources=True,
        )
        locks = protect_kept_objects(repo)
    hold_if_evidence(repo, result.snapshot)
    return PlanBackupResult(result.snapshot, result.stats, outcomes, locks)


def backup_plan(
    repo: Repository,
    plan: Plan,
    *,
    reason: str = "manual",
    note: str | None = None,
    only_sources: list[str] | None = None,
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
) -> PlanBackupResult:
    """Back up the plan's sources (or `only_sources`) into ONE snapshot of `repo`: what
    `safehold backup` does with a plan. A failed source leaves the snapshot incomplete (see
    `PlanBackupResult.failed`) rather than raising."""
    return run_plan_backup(
        repo, build_sources(plan, only_sources or None), app=plan.app, env=plan.env,
        reason=reason, note=note, redact=plan.redactor(), options=options, progress=progress,
    )  # fmt: skip


def _latest_plan_snapshot(repo: Repository, app: str, env: str) -> Snapshot | None:
    for snapshot in reversed(repo.list_snapshots()):
        if snapshot.safehold.get("app") == app and snapshot.safehold.get("env") == env:
            return snapshot
    return None


def _parent_manifest(parent: Snapshot | None, name: str) -> dict[str, Any]:
    """The source's manifest in the parent snapshot; empty when it was not there or failed."""
    manifests = parent.safehold.get("sources") if parent is not None else None
    manifest = manifests.get(name) if isinstance(manifests, dict) else None
    if not isinstance(manifest, dict) or manifest.get("failed"):
        return {}
    return manifest


def _attribute_errors(
    stats: BackupStats,
    sources: list[Source],
    items: list[BackupItem],
    failures: dict[str, str],
    redact: Redact,
) -> None:
    """Map per-path read errors to the source that owns the path."""
    owners: list[tuple[str, str]] = []  # (path prefix, source)
    for item in items:
        source = item.components[0].decode()
        owners.append(
            ("/" + "/".join(c.decode("utf-8", "replace") for c in item.components), source)
        )
        if item.real_path is not None:
            owners.append((item.real_path.decode("utf-8", "replace"), source))
    for path, message in stats.errors:
        for prefix, source in owners:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                failures.setdefault(source, redact(f"{path}: {message}"))
                break


def _count(repo: Repository, root_tree: str, source: str) -> tuple[int, int]:
    node, subtree = find_node(repo, root_tree, f"/{source}")
    if node is None or subtree is None:
        return 0, 0
    files = 0
    size = 0
    for _, child in walk_tree(repo, subtree):
        if child.type == "file":
            files += 1
            size += child.size
    return files, size
