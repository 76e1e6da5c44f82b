"""One observation of the repositories: read once, judged by the watch, counted by the metrics,
scored by status. Nothing here alerts or prints."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from safehold.app.opener import open_destination
from safehold.app.releases import Release, load_ledger
from safehold.drills.record import DrillRecord, latest_drill
from safehold.errors import SafeholdError
from safehold.pitr.health import PitrHealth, pitr_health
from safehold.plan.models import LocalDestination, Plan, PostgresConfig
from safehold.repo.objectlock import LockStatus, RetentionCache, lock_status
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot, is_good_backup_of

OpenRepo = Callable[[LocalDestination], Repository]


def destination_opener(plan: Plan, environ: Mapping[str, str] = os.environ) -> OpenRepo:
    """How `observe` opens each destination: with the one opener, in the plan's environment."""
    return lambda destination: open_destination(plan, destination.name, environ)


@dataclass
class DestinationView:
    destination: LocalDestination
    repo: Repository | None = None
    error: str = ""
    hint: str = ""
    snapshots: list[Snapshot] = field(default_factory=list)  # this plan's, oldest first
    locks: LockStatus | None = None  # with object_lock_days: the newest snapshot's retention
    locks_error: str = ""

    @property
    def reachable(self) -> bool:
        return self.repo is not None


@dataclass
class Observation:
    """What the repositories say right now (read once, used by watch and metrics)."""

    plan: Plan
    now: datetime
    destinations: list[DestinationView]
    drill: DrillRecord | None = None  # the newest on any reachable destination
    drill_error: str = ""
    releases: list[Release] = field(default_factory=list)  # the ledger of the first reachable
    releases_error: str = ""
    pitr: dict[str, PitrHealth] = field(default_factory=dict)  # sources with pitr = "wal"

    @property
    def reachable(self) -> list[DestinationView]:
        return [view for view in self.destinations if view.reachable]

    def newest_good(self, source: str) -> tuple[Snapshot, str] | None:
        """The newest snapshot holding a good backup of `source` (`is_good_backup_of`), and its
        destination. Freshness is per source: a partial or single-source backup of `source`
        counts (`backup --source media` does protect media), an evidence snapshot does not
        (it holds the data a restore then replaced, not what the app runs on)."""
        best: tuple[Snapshot, str] | None = None
        for view in self.reachable:
            for snapshot in view.snapshots:
                if is_good_backup_of(snapshot, source) and (
                    best is None or snapshot.time.ns > best[0].time.ns
                ):
                    best = (snapshot, view.destination.name)
        return best


def observe(plan: Plan, now: datetime, open_repo: OpenRepo, *, drills: bool = True) -> Observation:
    views: list[DestinationView] = []
    for destination in plan.destinations:
        view = DestinationView(destination)
        try:
            repo = open_repo(destination)
            view.snapshots = [
                s
                for s in repo.list_snapshots()
                if s.safehold.get("app") == plan.app and s.safehold.get("env") == plan.env
            ]
            view.repo = repo
        except SafeholdError as err:
            view.error, view.hint = err.message, err.hint
        except Exception as err:  # an unreachable store fails in its own ways (network, SDK)
            view.error = f"{type(err).__name__}: {err}"
        if view.repo is not None and destination.object_lock_days:
            _observe_locks(view, view.repo)
        views.append(view)
    observation = Observation(plan, now, views)
    if drills:
        _newest_drill(observation)
    if plan.release is not None and observation.reachable:
        _ledger(observation)
    _pitr(observation)
    return observation


def _observe_locks(view: DestinationView, repo: Repository) -> None:
    """The earliest retain-until among the objects of the plan's newest snapshot there."""
    newest = view.snapshots[-1] if view.snapshots else None
    if newest is None:
        return
    try:
        view.locks = lock_status(repo, newest, cache=RetentionCache.for_repository(repo))
    except SafeholdError as err:
        view.locks_error = err.message


LOCKS_FIX = (
    "run `safehold backup` or `safehold copy` (each extends the retention of what the kept "
    "snapshots need); if it keeps failing, check that the login may s3:PutObjectRetention; "
    "details: `safehold lock status`"
)


def lock_verdict(view: DestinationView) -> tuple[bool, str] | None:
    """(meets the policy, what was found) for a destination with object_lock_days, None when
    it was not measured (unreachable, or no snapshot of the plan yet)."""
    if view.locks_error:
        return False, f"the retention could not be read: {view.locks_error}"
    status = view.locks
    if status is None or status.snapshot is None:
        return None
    if not status.meets_policy:
        return False, status.problem()
    assert status.earliest is not None
    left = (status.earliest - status.now).total_seconds() / 86400
    return True, (
        f"every object of {status.snapshot.name or status.snapshot.short_id} is locked until "
        f"{status.earliest:%Y-%m-%d %H:%M} UTC or later ({left:.1f} days)"
    )


def _pitr(observation: Observation) -> None:
    """The WAL archive of each `pitr = "wal"` source, from the first reachable destination
    (where `wal-push` archives)."""
    sources = [s for s in observation.plan.sources if isinstance(s, PostgresConfig) and s.pitr_wal]
    if not sources or not observation.reachable:
        return
    view = observation.reachable[0]
    assert view.repo is not None
    for config in sources:
        try:
            health = pitr_health(view.repo, view.snapshots, config, observation.now)
        except SafeholdError as err:
            health = PitrHealth(config.name, error=err.message)
        observation.pitr[config.name] = health


def _ledger(observation: Observation) -> None:
    repo = observation.reachable[0].repo
    assert repo is not None
    try:
        observation.releases = load_ledger(repo)
    except SafeholdError as err:
        observation.releases_error = err.message


def _newest_drill(observation: Observation) -> None:
    plan = observation.plan
    for view in observation.reachable:
        assert view.repo is not None
        try:
            record = latest_drill(view.repo, plan.app, plan.env)
        except SafeholdError as err:
            observation.drill_error = err.message
            continue
        if record is not None and (
            observation.drill is None or record.finished > observation.drill.finished
        ):
            observation.drill = record


def max_lag(plan: Plan, index: int) -> timedelta | None:
    destination = plan.destinations[index]
    if destination.max_lag is not None:
        return destination.max_lag
    return None if index == 0 else plan.targets.rpo + timedelta(days=1)


def rpo_of(plan: Plan, source_name: str) -> timedelta:
    source = plan.source(source_name)
    return source.rpo if source.rpo is not None else plan.targets.rpo
