"""A plan's destinations together: keeping the offsite ones in step after a backup, and which
of them hold a copy of which snapshot (3-2-1 at a glance)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from safehold.app.copy import CopyResult, copy_snapshots
from safehold.app.opener import open_destination
from safehold.errors import SafeholdError
from safehold.plan.models import LocalDestination, Plan
from safehold.repo.snapshot import Snapshot, same_snapshot


def copy_holders(
    plan: Plan, snapshots: list[Snapshot], environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, list[str]], list[str]]:
    """For each snapshot id of the first destination, the OTHER destinations holding a copy:
    a snapshot there that `same_snapshot` says is the same backup (restic's similarSnapshots:
    tree, time, host, user, uid, gid, paths, tags, excludes). A snapshot there whose
    `original` names ours but whose content differs (a rewrite) holds nothing of it. Returns
    that map and the destinations that could not be read (they count as holding nothing)."""
    holders: dict[str, list[str]] = {snapshot.id: [] for snapshot in snapshots}
    unreachable: list[str] = []
    for destination in plan.destinations[1:]:
        try:
            theirs = open_destination(plan, destination.name, environ).list_snapshots()
        except SafeholdError:
            unreachable.append(destination.name)
            continue
        by_tree: dict[str, list[Snapshot]] = {}
        for other in theirs:
            by_tree.setdefault(other.tree, []).append(other)
        for snapshot in snapshots:
            if any(same_snapshot(snapshot, other) for other in by_tree.get(snapshot.tree, [])):
                holders[snapshot.id].append(destination.name)
    return holders, unreachable


def copy_after_backup(
    plan: Plan, environ: Mapping[str, str] = os.environ
) -> list[tuple[LocalDestination, CopyResult]]:
    """Copy what the first destination has to every destination marked `copy_after_backup`,
    as `safehold backup` does after its snapshot; returns what each copy did."""
    results: list[tuple[LocalDestination, CopyResult]] = []
    for destination in plan.destinations[1:]:
        if not destination.copy_after_backup:
            continue
        source = open_destination(plan, plan.destinations[0].name, environ)
        target = open_destination(plan, destination.name, environ)
        results.append((destination, copy_snapshots(source, target)))
    return results
