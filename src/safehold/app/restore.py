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
import shlex
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safehold.app.backup import snapshot_name
from safehold.app.plan_backup import Redact, run_plan_backup
from safehold.app.scope import TableScope, table_scope, would_lose_rows
from safehold.errors import SafeholdError, UsageError
from safehold.fs.livediff import ADDED, CHANGED, MISSING, SAME, compare_live
from safehold.fs.restorer import RestoreOptions, Restorer, RestoreStats
from safehold.fs.restorer import target_problem as file_target_problem
from safehold.repo.gotypes import format_time
from safehold.repo.progress import Progress, ProgressCallback
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
from safehold.sources.base import (
    KEEP_ACCOUNTS,
    AccountOptions,
    CountingSource,
    RestoreReport,
    Source,
)
from safehold.sources.files import FilesSource
from safehold.sources.from_plan import build_source

if TYPE_CHECKING:
    from safehold.plan.models import Plan

CHANGED_CHOICES = ("keep", "restore")
RESTORE, KEEP, SKIP = "restore", "keep", "skip"


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
class FileDecision:
    """What a restore into a live folder does with one file (or missing folder) there."""

    path: str  # relative to the live folder
    status: str  # missing, changed, added, same (fs/livediff.py)
    action: str  # restore, keep (left as it is), skip (already the snapshot's)
    why: str
    files: int = 1
    newer: bool = False  # the live file is newer than the snapshot's copy
    bytes: int = 0  # the snapshot's data under it (what restoring it reads)

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "status": self.status, "action": self.action,
                "why": self.why, "files": self.files, "newer": self.newer}  # fmt: skip


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
    # Files sources restored into a live folder: one decision per file that differs.
    only_missing: bool = False
    changed: str | None = None  # keep | restore (None: keep with --only-missing)
    overwrite_newer: bool = False
    decisions: tuple[FileDecision, ...] = ()
    # Database sources restored onto production: tables with more rows now than backed up.
    row_losses: tuple[TableScope, ...] = ()
    loss_note: str = ""  # why what production would lose could not be counted
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
    def restore_bytes(self) -> int:
        """The data the restore reads: all of it, or of the files it restores into a live
        folder."""
        if self.only is None:
            return self.total_bytes
        return sum(d.bytes for d in self.decisions if d.action == RESTORE)

    @property
    def total_files(self) -> int:
        return sum(item.files for item in self.items)

    @property
    def total_blobs(self) -> int:
        return sum(item.blobs for item in self.items)

    def files_where(self, action: str, status: str | None = None, newer: bool | None = None) -> int:
        """How many files the decisions give `action` (and `status`, `newer`)."""
        return sum(d.files for d in self.decisions if d.action == action
                   and (status is None or d.status == status)
                   and (newer is None or d.newer == newer))  # fmt: skip

    @property
    def replaces(self) -> int:
        """Live files the restore overwrites (missing ones are only added)."""
        return sum(d.files for d in self.decisions if d.action == RESTORE and d.status != MISSING)

    @property
    def only(self) -> frozenset[str] | None:
        """The paths restored into the live folder; None: a whole restore."""
        if not self.decisions and not (self.only_missing or self.changed):
            return None
        return frozenset(d.path for d in self.decisions if d.action == RESTORE)


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
    only_missing: bool = False,
    changed: str | None = None,
    overwrite_newer: bool = False,
) -> RestorePlan:
    """Plan restoring one plan source from `snapshot` into `target` (under a shared lock).

    Raises UsageError when the snapshot lacks the source or the source failed in it; a target
    that is the source's live location is refused (recorded, not raised) unless the caller
    passed both `to_production` and `yes`; then the plan names the evidence snapshot.

    A files source restored into one of its live folders gets a decision per file: missing
    files are restored; with `only_missing` (or `changed`) changed files are kept unless
    `changed` is "restore"; a live file newer than the snapshot's copy is kept unless
    `overwrite_newer`; files added since the backup are never touched. A restore that only
    adds missing files overwrites nothing and needs no --to-production. A database restored
    onto production counts the rows it would lose (more rows now than in the backup)."""
    manifest = _source_manifest(snapshot, source.name)
    if changed is not None and changed not in CHANGED_CHOICES:
        raise UsageError(f"--changed {changed}: unknown choice", hint="use keep or restore")
    incremental = only_missing or changed is not None
    if incremental and not isinstance(source, FilesSource):
        raise UsageError(
            f"--only-missing and --changed are for files sources; {source.name} is {source.kind}",
            hint=f"copy back only the missing rows with `safehold db recover {snapshot.short_id} "
            f"--source {source.name}`",
        )
    with repo.locked(exclusive=False):
        items = _items(repo, snapshot.tree, [f"/{source.name}"], children=True)
    # The production guard, the one rule for the CLI's restores and the drill's.
    production = source.is_production_target(target)
    decisions: tuple[FileDecision, ...] = ()
    if isinstance(source, FilesSource) and (production or incremental):
        decisions = _file_decisions(
            repo, snapshot, source, target, incremental=incremental,
            changed=changed or "keep", overwrite_newer=overwrite_newer,
        )  # fmt: skip
    losses: tuple[TableScope, ...] = ()
    loss_note = ""
    if production and isinstance(source, CountingSource):
        try:
            losses = tuple(would_lose_rows(table_scope(source, manifest)))
        except SafeholdError as err:
            loss_note = f"the live rows could not be counted: {err.message}"
    replaces = sum(d.files for d in decisions if d.action == RESTORE and d.status != MISSING)
    adds_only = incremental and replaces == 0
    guarded = production and not adds_only
    refusal = None
    if guarded and not (to_production and yes):
        refusal = _production_refusal(source, _loss_words(decisions, losses), snapshot, target)
    evidence = None
    if guarded:
        note = _evidence_note(snapshot)
        evidence = EvidencePlan(
            source.name, snapshot_name(f"{app}-{env}", repo.clock(), "evidence", note)
        )
    return RestorePlan(
        snapshot.id, snapshot.name, format_time(snapshot.time), target, tuple(items),
        source_name=source.name, source_type=source.kind, production=production,
        evidence=evidence, refusal=refusal, accounts=accounts, only_missing=only_missing,
        changed=changed, overwrite_newer=overwrite_newer, decisions=decisions,
        row_losses=losses, loss_note=loss_note,
        snapshot=snapshot, source=source, manifest=manifest, app=app, env=env,
    )  # fmt: skip


def _file_decisions(
    repo: Repository, snapshot: Snapshot, source: FilesSource, target: str, *,
    incremental: bool, changed: str, overwrite_newer: bool,
) -> tuple[FileDecision, ...]:  # fmt: skip
    """Compare the live folder `target` (one of the source's folders) with its copy in the
    snapshot, and decide per file."""
    folder = source.folder_for(target)
    if folder is None:
        if incremental:
            raise UsageError(
                f"--only-missing and --changed restore into a live folder of {source.name}; "
                f"{target} is not one",
                hint=f"use --into one of: {source.production_location()}",
            )
        return ()  # inside production but not a folder: the source refuses it
    with repo.locked(exclusive=False):
        node, subtree = find_node(repo, snapshot.tree, f"/{source.name}/{folder}")
        if node is None or subtree is None:
            raise UsageError(f"snapshot {snapshot.short_id} has no folder {folder} of "
                             f"{source.name}", hint="pick another snapshot")  # fmt: skip
        diff = compare_live(repo, subtree, target, source.excludes)
    decisions: list[FileDecision] = []
    for entry in diff.entries:
        if entry.status == MISSING:
            action, why = RESTORE, "missing from the live folder"
        elif entry.status == ADDED:
            action, why = KEEP, "added since the backup: never removed"
        elif entry.status == SAME:
            action, why = SKIP, "unchanged"
        elif incremental and changed == "keep":
            action, why = KEEP, "changed since the backup (--changed keep)"
        elif entry.newer and not overwrite_newer:
            action, why = KEEP, "newer than the snapshot's copy: add --overwrite-newer to replace"
        else:
            action, why = RESTORE, "changed since the backup: the snapshot's copy is put back"
        decisions.append(FileDecision(entry.path, entry.status, action, why, entry.files,
                                      entry.newer and entry.status == CHANGED,
                                      entry.bytes))  # fmt: skip
    return tuple(decisions)


def _loss_words(decisions: tuple[FileDecision, ...], losses: tuple[TableScope, ...]) -> str:
    """What a production restore would lose or replace, in words ("" when nothing)."""
    parts: list[str] = []
    replaced = [d for d in decisions if d.action == RESTORE and d.status != MISSING]
    newer = sum(d.files for d in replaced if d.newer)
    if replaced:
        count = sum(d.files for d in replaced)
        parts.append(
            f"it would replace {count} file(s) changed since the snapshot"
            + (f", {newer} of them newer than the snapshot's copy" if newer else "")
        )
    kept = sum(d.files for d in decisions if d.action == KEEP and d.newer)
    if kept:
        parts.append(f"{kept} file(s) newer than the snapshot are kept (--overwrite-newer "
                     "replaces them)")  # fmt: skip
    if losses:
        rows = sum(t.delta for t in losses)
        tables = ", ".join(f"{t.label} +{t.delta}" for t in losses[:5])
        parts.append(f"it would lose {rows} row(s) written since the backup ({tables})")
    return "; ".join(parts)


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
    only_missing: bool = False,
    changed: str | None = None,
    overwrite_newer: bool = False,
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
        to_production=to_production, yes=yes, accounts=accounts, only_missing=only_missing,
        changed=changed, overwrite_newer=overwrite_newer,
    )  # fmt: skip


def execute_restore(
    repo: Repository,
    plan: RestorePlan,
    *,
    redact: Redact = lambda text: text,
    on_evidence: Callable[[Snapshot], None] | None = None,
    progress: ProgressCallback | None = None,
) -> RestoreReport:
    """Carry out a plan made by `plan_restore`: its evidence snapshot first, then the restore,
    verified by the source against the manifest. Raises the plan's refusal if it has one, and
    UsageError when the evidence snapshot fails (then nothing was overwritten).

    `progress` hears the evidence backup (phase "backup"), then phase "restore": the bytes
    of the source's data read from the repository, of the plan's total, with `source` set."""
    if plan.refusal is not None:
        raise plan.refusal
    source = plan.source
    if source is None:
        raise UsageError("this restore plan restores files", hint="use execute_file_restore")
    if plan.evidence is not None:
        evidence = take_evidence(
            repo, source, app=plan.app, env=plan.env, note=_evidence_note(plan.snapshot),
            redact=redact, nothing_done="nothing was overwritten", progress=progress,
        )  # fmt: skip
        if on_evidence is not None:
            on_evidence(evidence)
    report = _restore_reporting(repo, plan, source, progress)
    if plan.decisions or plan.only is not None:
        report.summary.extend(decision_summary(plan))
        report.details["decisions"] = {
            "restored": plan.files_where(RESTORE), "kept": plan.files_where(KEEP),
            "unchanged": plan.files_where(SKIP),
        }  # fmt: skip
    return report


def _restore_reporting(
    repo: Repository, plan: RestorePlan, source: Source, progress: ProgressCallback | None
) -> RestoreReport:
    """The restore step of `execute_restore`, telling `progress` the data it reads."""
    if progress is None:
        return _restore(repo, plan.snapshot, source, plan.manifest, plan.target,
                        plan.production, plan.accounts, plan.only)  # fmt: skip
    counter = _ReadProgress(progress, source.name, plan.restore_bytes)
    counter.report()
    with repo.observe_data_reads(counter.add):
        report = _restore(repo, plan.snapshot, source, plan.manifest, plan.target,
                          plan.production, plan.accounts, plan.only)  # fmt: skip
    counter.report()
    return report


class _ReadProgress:
    """Counts the data a source restore reads (from any thread) and reports it."""

    def __init__(self, progress: ProgressCallback, source: str, total: int) -> None:
        self._progress = progress
        self._source = source
        self._total = total
        self._done = 0
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self._done += size
        self.report()

    def report(self) -> None:
        self._progress(
            Progress("restore", self._done, max(self._total, self._done), "bytes",
                     current=self._source, source=self._source)
        )  # fmt: skip


def decision_summary(plan: RestorePlan) -> list[str]:
    """What a restore into a live folder does, in counts."""
    lines = [
        f"restore {plan.files_where(RESTORE, MISSING)} missing file(s), "
        f"replace {plan.files_where(RESTORE, CHANGED)} changed file(s)"
    ]
    kept_changed = plan.files_where(KEEP, CHANGED)
    if kept_changed:
        newer = plan.files_where(KEEP, CHANGED, newer=True)
        lines.append(f"keep {kept_changed} changed file(s) as they are"
                     + (f" ({newer} newer than the snapshot)" if newer else ""))  # fmt: skip
    added = plan.files_where(KEEP, ADDED)
    if added:
        lines.append(f"keep {added} file(s) added since the backup")
    same = plan.files_where(SKIP)
    if same:
        lines.append(f"{same} file(s) already match the snapshot")
    return lines


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
    only: frozenset[str] | None = None,
) -> RestoreReport:  # fmt: skip
    options: dict[str, Any] = {}
    if only is not None:
        options["only"] = only
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
    measure: bool = True,
) -> RestorePlan:
    """Plan restoring the files of `snapshot` (or only `includes`) into the folder `target`
    (under a shared lock). A non-empty target without `force` is recorded as the refusal.
    `measure=False` leaves `items` empty: counting them walks every tree of the snapshot,
    which only a --dry-run shows (a restore counts its files as it walks them)."""
    items: list[RestoreItem] = []
    if measure:
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


def _production_refusal(
    source: Source, losses: str = "", snapshot: Snapshot | None = None, target: str = "..."
) -> SafeholdError:
    hint = ("restore into a new place first; to overwrite production on purpose add "
            "--to-production --yes (an evidence snapshot is taken first)")  # fmt: skip
    if losses and snapshot is not None:
        ref = snapshot.name or snapshot.short_id
        if isinstance(source, FilesSource):
            better = (
                f"`safehold restore {ref} --source {source.name} --into {shlex.quote(target)} "
                "--only-missing` adds only what is gone"
            )
        else:
            better = (
                f"`safehold db diff {ref} --source {source.name}` shows the rows; "
                "`safehold db recover` copies back only the missing ones"
            )
        hint = f"{better}; --dry-run lists every file or table; {hint}"
    return production_write_refusal(
        source,
        f"refusing to restore source {source.name} into its production location "
        f"{source.production_location()}" + (f": {losses}" if losses else ""),
        hint,
    )


def take_evidence(
    repo: Repository,
    source: Source,
    *,
    app: str,
    env: str,
    note: str,
    redact: Redact = lambda text: text,
    nothing_done: str = "nothing was written",
    progress: ProgressCallback | None = None,
) -> Snapshot:
    """The evidence snapshot of `source` taken before any write into its live location
    (production restores, `db recover`, a table restore onto production): reason
    `evidence`, so it is held (`holds.hold_if_evidence`) and never becomes `latest`.
    UsageError when it fails; then the caller writes nothing."""
    evidence = run_plan_backup(
        repo, [source], app=app, env=env, reason="evidence", note=note, redact=redact,
        progress=progress,
    )  # fmt: skip
    if evidence.failed:
        raise UsageError(
            f"the evidence snapshot of {source.name} failed: {evidence.failed[0].error}",
            hint=f"{nothing_done}; fix the source or write elsewhere",
        )
    return evidence.snapshot


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
