"""Restore as a plan, then its execution (litestream's CalcRestorePlan/Restore, rustic's
RestorePlan).

`plan_restore` (one source of a plan) and `plan_file_restore` (files, no plan) read the
snapshot and look at the target; they change nothing, so `restore --dry-run` prints their
result. `execute_restore` and `execute_file_restore` carry a plan out and refuse one that is
not allowed. The production guard is here once: a restore into a source's live location is
refused unless the caller passed both `to_production` and `yes`, and then an evidence snapshot
of that source is taken first. The CLI (`safehold restore`) and the drill runner go through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.app.backup import snapshot_name
from safehold.app.plan_backup import Redact, run_plan_backup
from safehold.errors import SafeholdError, UsageError
from safehold.fs.restorer import RestoreOptions, Restorer, RestoreStats
from safehold.fs.restorer import target_problem as file_target_problem
from safehold.plan.models import Plan
from safehold.repo.gotypes import format_time
from safehold.repo.progress import ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import (
    EVIDENCE,
    Snapshot,
    good_sources,
    is_full_backup,
    is_good_backup_of,
)
from safehold.repo.tree import Node
from safehold.repo.walk import find_node
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions, RestoreReport, Source
from safehold.sources.from_plan import build_source


@dataclass(frozen=True)
class RestoreItem:
    """One entry of the snapshot that the restore fetches, as the snapshot tree knows it."""

    path: str  # in the snapshot, e.g. /db/app.sqlite3
    type: str  # the node type: file, dir, symlink, ...
    files: int
    bytes: int
    blobs: int  # data blob references of its files (duplicates counted once per file)
    unreadable_trees: int = 0  # folders whose tree could not be read: their files not counted


@dataclass(frozen=True)
class EvidencePlan:
    """The snapshot of the live data taken before a restore overwrites it."""

    source: str
    name: str  # the name it gets when taken on the day of the plan


@dataclass(frozen=True)
class RestorePlan:
    """What a restore fetches, where it goes, and whether it may run. Changes nothing."""

    snapshot_id: str
    snapshot_name: str | None
    snapshot_time: str  # RFC 3339
    target: str
    items: tuple[RestoreItem, ...]
    source_name: str | None = None  # None: files of the snapshot, no plan source
    source_type: str | None = None
    production: bool = False  # the target is the source's live location
    evidence: EvidencePlan | None = None  # taken first when a production restore runs
    refusal: SafeholdError | None = None  # why it may not run; None: allowed
    includes: tuple[str, ...] = ()  # file restores: only these paths of the snapshot
    force: bool = False  # file restores: write into a non-empty folder
    accounts: AccountOptions = KEEP_ACCOUNTS  # database restores: roles created, owners kept
    # What execution needs; not part of what the plan says.
    snapshot: Snapshot = field(repr=False, compare=False, kw_only=True)
    source: Source | None = field(default=None, repr=False, compare=False, kw_only=True)
    manifest: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False,
                                        kw_only=True)  # fmt: skip
    app: str = field(default="", repr=False, kw_only=True)
    env: str = field(default="", repr=False, kw_only=True)

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def total_files(self) -> int:
        return sum(item.files for item in self.items)

    @property
    def total_blobs(self) -> int:
        return sum(item.blobs for item in self.items)


def find_plan_snapshot(
    repo: Repository,
    ref: str,
    *,
    app: str,
    env: str,
    reason: str | None = None,
    source: str | None = None,
    plan_sources: Collection[str] | None = None,
) -> Snapshot:
    """Resolve `ref` (an id, a name, or `latest`) among this plan's snapshots.

    `latest` with `source`: the newest snapshot of this plan holding a good backup of that
    source (`is_good_backup_of`; a partial backup of it counts, an evidence snapshot does not
    unless `reason` is `evidence`). `latest` without `source`: the newest full backup of the
    plan (`is_full_backup` over `plan_sources`). `reason` narrows either to that reason."""
    snapshots = repo.list_snapshots()
    if ref != "latest":
        return repo.find_snapshot(ref, snapshots)
    mine = [
        s for s in snapshots
        if s.safehold.get("app") == app and s.safehold.get("env") == env
        and (reason is None or s.reason == reason)
    ]  # fmt: skip
    if source is not None:
        wanted = [s for s in mine if is_good_backup_of(s, source)
                  or (reason == EVIDENCE and source in good_sources(s))]  # fmt: skip
        what = f"a good backup of {source!r}"
    else:
        wanted = [s for s in mine if is_full_backup(s, plan_sources)]
        what = "a complete backup"
    if not wanted:
        of_reason = f" with reason {reason!r}" if reason else ""
        raise UsageError(f"no snapshot of {app}-{env}{of_reason} holds {what} yet",
                         hint="run `safehold backup` first")  # fmt: skip
    return max(wanted, key=lambda s: s.time.ns)


def plan_restore(
    repo: Repository,
    snapshot: Snapshot,
    source: Source,
    target: str,
    *,
    app: str,
    env: str,
    to_production: bool = False,
    yes: bool = False,
    accounts: AccountOptions = KEEP_ACCOUNTS,
) -> RestorePlan:
    """Plan restoring one plan source from `snapshot` into `target` (under a shared lock).

    Raises UsageError when the snapshot lacks the source or the source failed in it; a target
    that is the source's live location is refused (recorded, not raised) unless the caller
    passed both `to_production` and `yes`; then the plan names the evidence snapshot."""
    manifest = _source_manifest(snapshot, source.name)
    with repo.locked(exclusive=False):
        items = _items(repo, snapshot.tree, [f"/{source.name}"], children=True)
    # The production guard, the one rule for the CLI's restores and the drill's.
    production = source.is_production_target(target)
    refusal = _production_refusal(source) if production and not (to_production and yes) else None
    evidence = None
    if production:
        note = _evidence_note(snapshot)
        evidence = EvidencePlan(
            source.name, snapshot_name(f"{app}-{env}", repo.clock(), "evidence", note)
        )
    return RestorePlan(
        snapshot.id, snapshot.name, format_time(snapshot.time), target, tuple(items),
        source_name=source.name, source_type=source.kind, production=production,
        evidence=evidence, refusal=refusal, accounts=accounts,
        snapshot=snapshot, source=source, manifest=manifest, app=app, env=env,
    )  # fmt: skip


def plan_source_restore(
    repo: Repository,
    plan: Plan,
    ref: str,
    target: str,
    *,
    source_name: str | None = None,
    to_production: bool = False,
    yes: bool = False,
    reason: str | None = None,
    identity: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    accounts: AccountOptions = KEEP_ACCOUNTS,
) -> RestorePlan:
    """Plan restoring one source of `plan` from snapshot `ref` (an id, a name, or `latest`)
    into `target`: `safehold restore REF --source NAME --into TARGET`. The source may be left
    out when the plan has only one. `identity` is the age identity file that decrypts a
    secrets source (else SAFEHOLD_AGE_IDENTITY_FILE of `environ`, else its identity_command)."""
    if source_name is None:
        if len(plan.sources) != 1:
            names = ", ".join(s.name for s in plan.sources)
            raise UsageError(
                "which source? the plan has several", hint=f"add --source NAME ({names})"
            )
        source_name = plan.sources[0].name
    source = build_source(plan.source(source_name), plan, identity=identity, environ=environ)
    snapshot = find_plan_snapshot(
        repo, ref, app=plan.app, env=plan.env, reason=reason, source=source_name
    )
    return plan_restore(
        repo, snapshot, source, target, app=plan.app, env=plan.env,
        to_production=to_production, yes=yes, accounts=accounts,
    )  # fmt: skip


def execute_restore(
    repo: Repository,
    plan: RestorePlan,
    *,
    redact: Redact = lambda text: text,
    on_evidence: Callable[[Snapshot], None] | None = None,
) -> RestoreReport:
    """Carry out a plan made by `plan_restore`: its evidence snapshot first, then the restore,
    verified by the source against the manifest. Raises the plan's refusal if it has one, and
    UsageError when the evidence snapshot fails (then nothing was overwritten)."""
    if plan.refusal is not None:
        raise plan.refusal
    source = plan.source
    if source is None:
        raise UsageError("this restore plan restores files", hint="use execute_file_restore")
    if plan.evidence is not None:
        evidence = run_plan_backup(
            repo, [source], app=plan.app, env=plan.env, reason="evidence",
            note=_evidence_note(plan.snapshot), redact=redact,
        )  # fmt: skip
        if evidence.failed:
            raise UsageError(
                f"the evidence snapshot of {source.name} failed: {evidence.failed[0].error}",
                hint="nothing was overwritten; fix the source or restore elsewhere",
            )
        if on_evidence is not None:
            on_evidence(evidence.snapshot)
    return _restore(repo, plan.snapshot, source, plan.manifest, plan.target, plan.production,
                    plan.accounts)  # fmt: skip


def restore_source(
    repo: Repository, snapshot: Snapshot, source: Source, target: str, *,
    overwrite: bool = False, accounts: AccountOptions = KEEP_ACCOUNTS,
) -> RestoreReport:  # fmt: skip
    """The restore step alone, without the production guard or an evidence snapshot: restore
    commands and drills go through `plan_restore` and `execute_restore`. The source itself
    refuses an existing target unless `overwrite`."""
    manifest = _source_manifest(snapshot, source.name)
    return _restore(repo, snapshot, source, manifest, target, overwrite, accounts)


def _restore(
    repo: Repository, snapshot: Snapshot, source: Source, manifest: Mapping[str, Any],
    target: str, overwrite: bool, accounts: AccountOptions = KEEP_ACCOUNTS,
) -> RestoreReport:  # fmt: skip
    options: dict[str, Any] = {}
    if overwrite:
        options["overwrite"] = True
    if accounts != KEEP_ACCOUNTS:
        options["accounts"] = accounts
    with repo.locked(exclusive=False):
        return source.restore(repo, snapshot, dict(manifest), target, **options)


def plan_file_restore(
    repo: Repository,
    snapshot: Snapshot,
    target: str,
    *,
    includes: tuple[str, ...] = (),
    force: bool = False,
) -> RestorePlan:
    """Plan restoring the files of `snapshot` (or only `includes`) into the folder `target`
    (under a shared lock). A non-empty target without `force` is recorded as the refusal."""
    with repo.locked(exclusive=False):
        items = _items(repo, snapshot.tree, list(includes) or ["/"], children=not includes)
    return RestorePlan(
        snapshot.id, snapshot.name, format_time(snapshot.time), target, tuple(items),
        refusal=file_target_problem(target, force=force), includes=includes, force=force,
        snapshot=snapshot,
    )  # fmt: skip


def execute_file_restore(
    repo: Repository, plan: RestorePlan, progress: ProgressCallback | None = None
) -> RestoreStats:
    """Carry out a plan made by `plan_file_restore` under a shared lock. Raises the plan's
    refusal; an --include that matches nothing raises UsageError after the rest is restored."""
    if plan.refusal is not None:
        raise plan.refusal
    options = RestoreOptions(includes=list(plan.includes), force=plan.force)
    with repo.locked(exclusive=False):
        return Restorer(repo, options, progress).restore(plan.snapshot, plan.target)


def _production_refusal(source: Source) -> SafeholdError:
    return production_write_refusal(
        source,
        f"refusing to restore source {source.name} into its production location "
        f"{source.production_location()}",
        "restore into a new place first; to overwrite production on purpose add "
        "--to-production --yes (an evidence snapshot is taken first)",
    )


def production_write_refusal(source: Source, message: str, hint: str) -> SafeholdError:
    """The one refusal of a write into a source's live location that the user did not
    confirm: restores onto production, `db recover` without --yes."""
    del source  # the rule is the same for every source; it names it in `message`
    return UsageError(message, hint=hint)


def _evidence_note(snapshot: Snapshot) -> str:
    return f"before restore of {snapshot.short_id}"


def _source_manifest(snapshot: Snapshot, name: str) -> dict[str, Any]:
    manifests = snapshot.safehold.get("sources") or {}
    manifest = manifests.get(name)
    if manifest is None:
        raise UsageError(
            f"snapshot {snapshot.short_id} has no source {name!r}",
            hint=f"it has: {', '.join(sorted(manifests)) or 'no plan sources'}",
        )
    if manifest.get("failed"):
        raise UsageError(
            f"source {name} failed in snapshot {snapshot.short_id}: {manifest['failed']}",
            hint="pick an earlier snapshot: `safehold snapshots`",
        )
    return dict(manifest)


def _items(repo: Repository, root: str, paths: list[str], *, children: bool) -> list[RestoreItem]:
    """The entries at `paths` of the tree (with `children`: the entries inside each folder),
    each with the files, bytes and blobs under it. A path the tree lacks yields nothing; a
    tree that cannot be read is counted, not raised: the restore itself reports the files it
    loses and restores the rest."""
    items: list[RestoreItem] = []
    for path in paths:
        prefix = path.rstrip("/")
        try:
            node, subtree = find_node(repo, root, path)
            nodes = repo.load_tree(subtree) if children and subtree is not None else None
        except SafeholdError:
            items.append(RestoreItem(prefix or "/", "dir", 0, 0, 0, unreadable_trees=1))
            continue
        if nodes is not None:
            items.extend(_measure(repo, f"{prefix}/{child.display_name}", child) for child in nodes)
        elif node is not None:
            items.append(_measure(repo, prefix, node))
    return items


def _measure(repo: Repository, path: str, node: Node) -> RestoreItem:
    files = size = blobs = unreadable = 0
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "file":
            files, size, blobs = files + 1, size + current.size, blobs + len(current.content or [])
        elif current.type == "dir" and current.subtree:
            try:
                stack.extend(repo.load_tree(current.subtree))
            except SafeholdError:
                unreadable += 1
    return RestoreItem(path, node.type, files, size, blobs, unreadable_trees=unreadable)
