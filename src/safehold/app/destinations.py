"""Which destinations of a plan hold a copy of which snapshot (3-2-1 at a glance)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from safehold.app.opener import open_destination
from safehold.errors import SafeholdError
from safehold.plan.models import Plan
from safehold.repo.snapshot import Snapshot


def copy_holders(
    plan: Plan, snapshots: list[Snapshot], environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, list[str]], list[str]]:
    """For each snapshot id of the first destination, the OTHER destinations holding a copy:
    the same time, tree and paths, or a copy whose `original` is the snapshot. Returns that
    map and the destinations that could not be read (they count as holding nothing)."""
    holders: dict[str, list[str]] = {snapshot.id: [] for snapshot in snapshots}
    unreachable: list[str] = []
    for destination in plan.destinations[1:]:
        try:
            theirs = open_destination(plan, destination.name, environ).list_snapshots()
        except SafeholdError:
            unreachable.append(destination.name)
            continue
        keys = {(s.time.ns, s.tree, tuple(s.paths)) for s in theirs}
        originals = {s.original for s in theirs if s.original}
        for snapshot in snapshots:
            key = (snapshot.time.ns, snapshot.tree, tuple(snapshot.paths))
            if key in keys or snapshot.id in originals:
                holders[snapshot.id].append(destination.name)
    return holders, unreachable
