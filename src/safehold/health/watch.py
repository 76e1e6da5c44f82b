"""Noticing what did NOT happen. The watch reads the repositories themselves — not this
machine's job records — so it finds a backup job that was removed, never ran, or ran on
another machine that died, and it works from any machine that can open the repositories.

Checks, each a finding with a stable key (for rate limiting and "resolved" messages):

- `reach:<destination>`  the repository can be opened and listed (error);
- `stale:<source>`       the source's newest good backup (its manifest present and not
                         failed), on any reachable destination, is within its RPO (error);
- `lag:<destination>`    the destination's newest snapshot of the plan is within its
                         `max_lag` (default targets.rpo + 1d for every destination but the
                         first) (warning);
- `drill`                the newest drill record passed and is younger than the plan's drill
                         interval (failed: error; overdue or none: warning);
- `locks:<destination>`  with object_lock_days: every object of the destination's newest
                         snapshot is still locked for about the policy's days (the earliest
                         retain-until, read from the server; see repo/objectlock.py) (warning).

Freshness and drills are judged only when some destination was reached, and a lag only when
its destination was: an unmeasured problem is neither raised nor resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from safehold.alerts.notify import Alert, SendResult, age_words
from safehold.alerts.problems import ProblemTracker
from safehold.alerts.store import StateStore, parse_time
from safehold.health.metrics import observation_samples, render_text
from safehold.health.observe import (
    LOCKS_FIX,
    DestinationView,
    Observation,
    OpenRepo,
    lock_verdict,
    max_lag,
    observe,
    rpo_of,
)
from safehold.pitr.stream import streamer_fix
from safehold.plan.models import Plan
from safehold.plan.operations import Severity
from safehold.policy.duration import format_duration

DRILL_FAILED = "job:drill"


@dataclass
class Finding:
    key: str
    ok: bool
    severity: Severity
    title: str
    detail: str
    fix: str = ""
    cause: str = ""  # compared by the problem tracker: a new cause is alerted again

    def alert(self) -> Alert:
        return Alert(self.key, self.severity, self.title, self.detail, "", self.fix,
                     cause=self.cause)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "ok": self.ok,
            "severity": None if self.ok else self.severity,
            "title": self.title,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass
class WatchReport:
    now: datetime
    findings: list[Finding]
    sent: list[SendResult] = field(default_factory=list)
    metrics_text: str = ""

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if not finding.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": self.now.isoformat(),
            "ok": not self.problems,
            "findings": [finding.to_json() for finding in self.findings],
            "alerts": [
                {
                    "key": sent.alert.key,
                    "kind": sent.alert.kind,
                    "title": sent.alert.title,
                    "deliveries": [
                        {"channel": d.channel, "delivered": d.ok, "error": d.error}
                        for d in sent.deliveries
                    ],
                }
                for sent in self.sent
            ],
        }


def evaluate(observation: Observation) -> list[Finding]:
    findings = [_reach(view) for view in observation.destinations]
    if observation.reachable:
        findings.extend(_freshness(observation, source.name) for source in observation.plan.sources)
    for index, view in enumerate(observation.destinations):
        allowed = max_lag(observation.plan, index)
        if allowed is not None and view.reachable:
            findings.append(_lag(observation, view, allowed))
    for view in observation.destinations:
        locks = _locks(view)
        if locks is not None:
            findings.append(locks)
    if observation.reachable:
        findings.append(_drill(observation))
    findings.extend(_wal(observation, name) for name in observation.pitr)
    return findings


def _locks(view: DestinationView) -> Finding | None:
    verdict = lock_verdict(view)
    if verdict is None:
        return None
    ok, detail = verdict
    name = view.destination.name
    days = view.destination.object_lock_days or 0
    if ok:
        title = f"destination {name}: the newest backup is locked for {days:g} days"
        return Finding(f"locks:{name}", True, "warning", title, detail)
    title = f"destination {name}: the newest backup is locked for less than {days:g} days"
    return Finding(f"locks:{name}", False, "warning", title, detail, LOCKS_FIX)


def _wal(observation: Observation, source: str) -> Finding:
    """Point-in-time recovery: archiving keeps within the RPO, and the chain has no gap."""
    health = observation.pitr[source]
    rpo = rpo_of(observation.plan, source)
    key = f"wal:{source}"
    title = f"WAL archive of {source}: no gap, lag within the RPO ({format_duration(rpo)})"
    status = f"`safehold wal status --source {source}`"
    if health.error:
        return Finding(key, False, "error", f"WAL archive of {source} cannot be read",
                       health.error, f"run {status}")  # fmt: skip
    if health.problems:
        return Finding(key, False, "error", f"WAL archive of {source} has a gap",
                       health.problems[0],
                       f"take a base backup now (`safehold pitr basebackup --source {source}`) "
                       f"so recovery starts after the gap; {status} shows it")  # fmt: skip
    slot_problem = health.slot.problem() if health.slot is not None else None
    if slot_problem and health.slot is not None:
        return Finding(key, False, "error" if health.slot.lost else "warning",
                       f"WAL streaming of {source}: the streamer's slot needs attention",
                       slot_problem, streamer_fix(source))  # fmt: skip
    if health.lag_s is None:
        return Finding(key, False, "warning", f"WAL archive of {source} is empty",
                       "no WAL file archived yet",
                       f"check archive_command: safehold pitr setup --source {source}")  # fmt: skip
    lag = timedelta(seconds=health.lag_s)
    detail = f"newest WAL archived {age_words(lag)} ago" + (
        " (the server has nothing waiting)" if health.server_idle else ""
    )
    if lag > rpo:
        return Finding(key, False, "error", f"WAL archiving of {source} lags behind the RPO",
                       detail, "check PostgreSQL's log for archive_command errors and "
                       "pg_stat_archiver; with --async, that the pusher runs")  # fmt: skip
    return Finding(key, True, "error", title, detail)


def _reach(view: DestinationView) -> Finding:
    name = view.destination.name
    title = f"destination {name} can be reached"
    if view.reachable:
        return Finding(f"reach:{name}", True, "error", title, view.destination.location())
    return Finding(
        f"reach:{name}",
        False,
        "error",
        f"destination {name} cannot be reached",
        f"{view.destination.location()}: {view.error}",
        view.hint or "check the network, the credentials and the storage; then `safehold watch`",
        cause=view.error,
    )


def _freshness(observation: Observation, source: str) -> Finding:
    rpo = rpo_of(observation.plan, source)
    newest = observation.newest_good(source)
    key = f"stale:{source}"
    fix = (
        "run `safehold backup` now; then find out why the scheduled one did not run: "
        "`safehold schedule show` (is it installed, did it fail?)"
    )
    if newest is None:
        return Finding(
            key,
            False,
            "error",
            f"source {source} has no good backup within its RPO ({format_duration(rpo)})",
            "no good backup of it in any reachable destination",
            fix,
        )
    snapshot, where = newest
    age = observation.now - snapshot.time.to_datetime()
    label = snapshot.name or snapshot.short_id
    detail = f"newest good backup {age_words(age)} ago ({label} on {where})"
    if age <= rpo:
        return Finding(key, True, "error", f"source {source} backed up within its RPO", detail)
    return Finding(
        key,
        False,
        "error",
        f"source {source} has no good backup within its RPO ({format_duration(rpo)})",
        detail,
        fix,
    )


def _lag(observation: Observation, view: DestinationView, allowed: timedelta) -> Finding:
    name = view.destination.name
    key = f"lag:{name}"
    title = f"destination {name} has a copy younger than {format_duration(allowed)}"
    if not view.snapshots:
        return Finding(
            key,
            False,
            "warning",
            title,
            "it holds no snapshot of this plan yet",
            f"run `safehold copy --to {name}`",
        )
    newest = view.snapshots[-1]
    age = observation.now - newest.time.to_datetime()
    detail = f"newest snapshot {age_words(age)} old ({newest.name or newest.short_id})"
    if age <= allowed:
        return Finding(key, True, "warning", title, detail)
    return Finding(
        key,
        False,
        "warning",
        f"destination {name} lags: its newest copy is older than {format_duration(allowed)}",
        detail,
        f"run `safehold copy --to {name}` and check the copy job: `safehold schedule show`",
    )


def _drill(observation: Observation) -> Finding:
    record = observation.drill
    interval = observation.plan.drill.interval
    title = f"a restore drill passed within {format_duration(interval)}"
    if record is None:
        detail = "no drill record in any reachable destination"
        if observation.drill_error:
            detail = f"drill records cannot be read: {observation.drill_error}"
        fix = "run `safehold drill` (and schedule it: `safehold schedule install`)"
        return Finding("drill", False, "warning", "no restore drill yet", detail, fix)
    age = observation.now - record.finished
    label = f"drill of {record.snapshot_name or record.snapshot_id[:8]} {age_words(age)} ago"
    if not record.passed:
        reasons = "; ".join(record.reasons[:3]) or "see its report"
        return Finding(
            DRILL_FAILED,  # the drill job's own key: its failure alert is not sent twice
            False,
            "error",
            "the newest restore drill FAILED",
            f"{label}: {reasons}",
            "read `safehold drills`, fix what failed, then run `safehold drill` again",
        )
    if age > interval:
        return Finding(
            "drill",
            False,
            "warning",
            f"restore drill overdue (interval {format_duration(interval)})",
            f"newest passing {label}",
            "run `safehold drill`; check that the drill job is scheduled: `safehold schedule show`",
        )
    return Finding("drill", True, "warning", title, f"passed: {label}")


def _drill_passed_since_job_failed(observation: Observation, store: StateStore) -> bool:
    record = observation.drill
    if record is None or not record.passed:
        return False
    failed = parse_time(store.read("jobs").get("drill", {}).get("last_failure"))
    return failed is None or record.finished > failed


def run_watch(
    plan: Plan,
    *,
    now: datetime,
    open_repo: OpenRepo,
    tracker: ProblemTracker | None,
    metrics: bool = True,
) -> WatchReport:
    """Observe, judge, and (with a tracker) alert on what changed; also renders the
    metrics from the same observation so a watch keeps the Prometheus textfile fresh."""
    observation = observe(plan, now, open_repo)
    findings = evaluate(observation)
    report = WatchReport(now, findings)
    if tracker is not None:
        checked = [f.key for f in findings]
        if _drill_passed_since_job_failed(observation, tracker.store):
            checked.append(DRILL_FAILED)  # a later drill passed: the failed drill recovered
        report.sent = tracker.report([f.alert() for f in findings if not f.ok], checked=checked)
    if metrics:
        store = tracker.store if tracker is not None else None
        report.metrics_text = render_text(observation_samples(observation, store))
    return report
