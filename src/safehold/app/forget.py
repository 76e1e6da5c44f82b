"""`forget`: which snapshots go and why, then removing them.

Planned first, acted on second, so `--dry-run`, `--json` and the refusal to remove the only
copy of a snapshot all read the same decisions. The caller holds the repository lock (shared
for a dry run, exclusive otherwise) across both steps. WAL batches are decided by
`pitr.retention` from the snapshots this plan keeps; the CLI joins the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from safehold.app.holds import held_snapshots
from safehold.backends.base import ObjectLockedError
from safehold.errors import SnapshotNotFoundError
from safehold.policy.retention import (
    PlanScope,
    RetentionPolicy,
    apply_retention,
    explain,
    held_reason,
)
from safehold.repo.damage import DamagedObject
from safehold.repo.format import FileType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

#: Given the snapshots to remove, the ids of those another destination also holds.
CopiesElsewhere = Callable[[list[Snapshot]], set[str]]


@dataclass
class ForgetPlan:
    """The decisions for every snapshot considered, and what they add up to."""

    lines: list[str]  # KEEP/REMOVE lines, as `forget` prints them
    decisions: list[dict[str, object]]  # the same, for --json
    doomed: list[Snapshot]  # intact snapshots to remove
    broken: list[DamagedObject] = field(default_factory=list)  # damaged ones named by id
    only_here: list[Snapshot] = field(default_factory=list)  # doomed, held by no other copy
    kept: list[Snapshot] = field(default_factory=list)  # what stays (WAL retention reads it)

    @property
    def count(self) -> int:
        return len(self.doomed) + len(self.broken)


def plan_named_forget(repo: Repository, refs: Sequence[str]) -> ForgetPlan:
    """The snapshots named by id, prefix, name or `latest`; a held one is kept. A damaged
    snapshot file can be named by its id (it lists as nothing else)."""
    listing = repo.list_snapshots()
    held = held_snapshots(repo)  # never removed, whatever the flags (--force included)
    chosen: set[str] = set()
    broken: list[DamagedObject] = []
    for ref in refs:
        try:
            chosen.add(repo.find_snapshot(ref, listing).id)
        except SnapshotNotFoundError:
            damaged = repo.find_damaged_snapshot(ref)
            if damaged is None:
                raise
            if damaged not in broken:
                broken.append(damaged)
    named = [snapshot for snapshot in listing if snapshot.id in chosen]
    lines = [
        f"KEEP   {s.short_id} {s.name or '-'}  {held_reason(held[s.id])}"
        if s.id in held else f"REMOVE {s.short_id} {s.name or ''}".rstrip()
        for s in named
    ]  # fmt: skip
    decisions: list[dict[str, object]] = [
        {"id": s.id, "keep": s.id in held,
         "reasons": [held_reason(held[s.id])] if s.id in held else []}
        for s in named
    ]  # fmt: skip
    lines += [f"REMOVE {d.short_id} (damaged: {d.reason})" for d in broken]
    decisions += [{"id": d.object_id, "keep": False, "reasons": ["damaged"]} for d in broken]
    doomed = [snapshot for snapshot in named if snapshot.id not in held]
    return _finish(ForgetPlan(lines, decisions, doomed, broken), listing)


def plan_policy_forget(
    repo: Repository, policy: RetentionPolicy, scope: PlanScope | None
) -> ForgetPlan:
    """What the retention `policy` does not keep (holds always kept; `scope`: the plan whose
    full backups count, see policy.retention)."""
    listing = repo.list_snapshots()
    decided = apply_retention(listing, policy, plan=scope, holds=held_snapshots(repo))
    decisions: list[dict[str, object]] = [
        {"id": d.snapshot.id, "name": d.snapshot.name, "keep": d.keep, "reasons": d.reasons}
        for d in decided
    ]
    doomed = [d.snapshot for d in decided if not d.keep]
    return _finish(ForgetPlan(explain(decided), decisions, doomed), listing)


def mark_only_copies(plan: ForgetPlan, copies_elsewhere: CopiesElsewhere | None) -> None:
    """Fill `plan.only_here`: doomed snapshots no other destination holds. Without a way to
    ask (a repository named by -r, no plan) nothing is marked, as restic would."""
    if copies_elsewhere is None or not plan.doomed:
        plan.only_here = []
        return
    elsewhere = copies_elsewhere(plan.doomed)
    plan.only_here = [snapshot for snapshot in plan.doomed if snapshot.id not in elsewhere]


def remove_snapshots(repo: Repository, plan: ForgetPlan) -> list[str]:
    """Delete every doomed and broken snapshot file; returns the messages of those still
    under Object Lock retention (they stay, and are counted as not removed)."""
    retained: list[str] = []
    for snapshot_id in [s.id for s in plan.doomed] + [d.object_id for d in plan.broken]:
        try:
            repo.delete(FileType.SNAPSHOT, snapshot_id)
        except ObjectLockedError as err:
            retained.append(err.message)
    return retained


def _finish(plan: ForgetPlan, listing: list[Snapshot]) -> ForgetPlan:
    gone = {snapshot.id for snapshot in plan.doomed}
    plan.kept = [snapshot for snapshot in listing if snapshot.id not in gone]
    return plan
