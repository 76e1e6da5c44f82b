"""Scheduled jobs: what each one runs, and running one with everything around it.

A job is one or more safehold commands run as child processes (`safehold --plan PLAN
backup --reason daily`, then `copy` when copies follow backups). `run_job` wraps them the
same way whether systemd, cron or `safehold run` started it:

1. take the job's lock (a job still running is never started twice: the second start says
   so and exits 0);
2. ping `start`; run each step, passing its output through and keeping its `error:` and
   `hint:` lines;
3. record the outcome in the state folder; ping `success` or `fail` (with the error);
4. on a failed step, one alert saying what failed, why (the command's error lines) and what
   to do first (its hint); on a step that succeeds after failing, a recovery message.
   Repeats are rate-limited (alerts/problems.py).

A failed alert or ping is recorded and never changes the job's exit code."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from safehold.alerts.notify import Alert, SendResult
from safehold.alerts.pings import Pinger
from safehold.alerts.problems import ProblemTracker
from safehold.alerts.store import Document, StateStore
from safehold.app.incident_log import note_event, open_incident
from safehold.errors import ExitCode, UsageError
from safehold.ops.state import take_drill_request
from safehold.plan.locate import plan_environment
from safehold.plan.models import Plan, PostgresConfig
from safehold.plan.operations import ScheduleConfig
from safehold.policy.schedule import Cron

JOB_ENV = "SAFEHOLD_JOB"  # set for a job's child commands: the job alerts, they stay quiet
WATCH_PROBLEMS = 2  # `safehold watch` exit code when a problem is open (not a job failure)

_DEFAULT_FIX = {
    "backup": "run `safehold backup` by hand to see the whole error; `safehold status` shows "
    "what else is wrong",
    "copy": "run `safehold copy` by hand; check the destination's credentials and network",
    "prune": "run `safehold forget --dry-run` by hand to see what the policy would remove",
    "drill": "run `safehold drill` by hand and read its report (`safehold drills`)",
    "watch": "run `safehold watch` by hand to see the error",
}
_WHAT = {
    "backup": "backup",
    "copy": "copy to the other destinations",
    "prune": "forget + prune (retention)",
    "drill": "restore drill",
    "watch": "staleness watch",
}


@dataclass(frozen=True)
class Step:
    name: str  # backup, copy, prune, drill, watch: what an alert says failed
    args: tuple[str, ...]  # safehold arguments after `--plan PLAN`
    ok_codes: frozenset[int] = frozenset({ExitCode.OK})
    alert: bool = True


@dataclass(frozen=True)
class Job:
    name: str
    cron: Cron | None  # None: not on a timer (copy after backup, or off)
    steps: tuple[Step, ...]


def schedule_of(plan: Plan) -> ScheduleConfig:
    return plan.schedule if plan.schedule is not None else ScheduleConfig()


def backup_reason(cron: Cron | None, now: datetime) -> str:
    """Scheduled backups are named after their rhythm: `hourly` when they run more than
    once a day, else `daily` (retention's keep_reason can count them)."""
    if cron is not None and cron.shortest_gap(now) < timedelta(hours=23):
        return "hourly"
    return "daily"


def plan_jobs(plan: Plan, now: datetime) -> dict[str, Job]:
    """Every job of the plan that runs on a schedule or after another job, by name."""
    schedule = schedule_of(plan)
    several = len(plan.destinations) > 1
    copy_step = Step("copy", ("copy",))
    jobs: dict[str, Job] = {}
    backup_cron = schedule.cron("backup")
    steps = [Step("backup", ("backup", "--reason", backup_reason(backup_cron, now)))]
    if several and schedule.copy_after_backup:
        steps.append(copy_step)
    jobs["backup"] = Job("backup", backup_cron, tuple(steps))
    if several:
        jobs["copy"] = Job("copy", schedule.cron("copy"), (copy_step,))
    # A plan with one destination can hold no copy elsewhere; forget's safeguard would then
    # refuse every removal, so the scheduled policy runs with --force there.
    forget = ("forget", "--prune") if several else ("forget", "--prune", "--force")
    jobs["prune"] = Job("prune", schedule.cron("prune"), (Step("prune", forget),))
    jobs["drill"] = Job("drill", schedule.cron("drill"), (Step("drill", ("drill",)),))
    watch = Step("watch", ("watch",), frozenset({ExitCode.OK, WATCH_PROBLEMS}))
    jobs["watch"] = Job("watch", schedule.cron("watch"), (watch,))
    bases = tuple(
        Step("basebackup", ("pitr", "basebackup", "--source", source.name))
        for source in plan.sources
        if isinstance(source, PostgresConfig) and source.pitr_wal
    )
    if bases:  # point-in-time recovery: a base backup a week keeps the replay short
        jobs["basebackup"] = Job("basebackup", schedule.cron("basebackup"), bases)
    return jobs


def timed_jobs(plan: Plan, now: datetime) -> list[Job]:
    """The jobs that run on a timer of their own."""
    return [job for job in plan_jobs(plan, now).values() if job.cron is not None]


def find_job(plan: Plan, name: str, now: datetime) -> Job:
    jobs = plan_jobs(plan, now)
    if name not in jobs:
        known = ", ".join(jobs)
        hint = f"the plan's jobs are: {known}"
        if name == "copy":
            hint = "copy needs a second destination; " + hint
        raise UsageError(f"no job named {name!r}", hint=hint)
    return jobs[name]


@dataclass
class StepOutcome:
    step: str
    exit_code: int
    ok: bool
    errors: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # other telling lines (a drill's reasons)


@dataclass
class JobResult:
    job: str
    exit_code: int
    started: datetime
    finished: datetime
    steps: list[StepOutcome] = field(default_factory=list)
    skipped: str = ""  # why the job did not run (already running)
    interrupted: bool = False
    alerts: list[SendResult] = field(default_factory=list)
    ping_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps) and not self.interrupted


StepRunner = Callable[[Step], StepOutcome]


def safehold_command(plan: Plan, args: tuple[str, ...] | list[str]) -> list[str]:
    """The argv that runs `safehold --plan PLAN ARGS…` with this very installation."""
    plan_file = str(plan.file) if plan.file is not None else str(plan.base_dir / "safehold.toml")
    return [sys.executable, "-m", "safehold", "--plan", plan_file, *args]


def subprocess_runner(
    plan: Plan, environ: Mapping[str, str], echo: Callable[[str], None]
) -> StepRunner:
    """Runs a step as a child process: stdout passes through, stderr is echoed line by line
    (journald and cron mail see everything) and its error/hint lines are kept."""

    def run(step: Step) -> StepOutcome:
        env = {**environ, JOB_ENV: step.name}
        with subprocess.Popen(
            safehold_command(plan, step.args),
            cwd=plan.base_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as child:
            assert child.stdout is not None
            errors: list[str] = []
            hints: list[str] = []
            notes: list[str] = []
            try:
                for line in child.stdout:
                    echo(line.rstrip("\n"))
                    if line.startswith("error: "):
                        errors.append(line[len("error: ") :].strip())
                    elif line.startswith("hint: "):
                        hints.append(line[len("hint: ") :].strip())
                    elif line.startswith("  - ") or "FAILED" in line:
                        notes.append(line.strip().removeprefix("- "))  # a drill's reasons
                code = child.wait()
            except KeyboardInterrupt:
                # The signal reached the whole process group: let the child finish cleanly.
                with contextlib.suppress(KeyboardInterrupt):
                    child.wait(timeout=60)
                raise
        return StepOutcome(step.name, code, code in step.ok_codes, errors, hints, notes)

    return run


@contextlib.contextmanager
def job_lock(store: StateStore, job: str) -> Iterator[bool]:
    """Hold the job's lock; yields False (without waiting) when another process holds it."""
    store.folder.mkdir(parents=True, exist_ok=True)
    path = store.folder / f"job-{job}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield True


def job_running(store: StateStore, job: str) -> bool:
    """Whether some process holds the job's lock right now."""
    path = store.folder / f"job-{job}.lock"
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def run_job(
    plan: Plan,
    job: Job,
    *,
    store: StateStore,
    tracker: ProblemTracker,
    pinger: Pinger,
    runner: StepRunner,
    clock: Callable[[], datetime],
) -> JobResult:
    started = clock()
    with job_lock(store, job.name) as acquired:
        if not acquired:
            return JobResult(
                job.name, ExitCode.OK, started, clock(), skipped="it is already running"
            )
        paused = prune_paused(store) if job.name == "prune" else ""
        if paused:
            note_event(store, f"scheduled prune skipped: {paused}", clock=clock)
            return JobResult(job.name, ExitCode.OK, started, clock(), skipped=paused)
        result = JobResult(job.name, ExitCode.OK, started, started)
        if job.name == "drill":
            take_drill_request(store)  # this drill answers any pending request
        _record_start(store, job.name, started)
        _ping(pinger, job.name, "start", "", result)
        try:
            _run_steps(plan, job, runner, tracker, result)
        except KeyboardInterrupt:
            result.interrupted = True
            result.exit_code = ExitCode.INTERRUPTED
        result.finished = clock()
        _record_finish(store, result)
        if not result.interrupted:
            event = "success" if result.ok else "fail"
            body = "\n".join(e for step in result.steps for e in step.errors)
            _ping(pinger, job.name, event, body, result)
    return result


def prune_paused(store: StateStore) -> str:
    """Why scheduled prune must not run now ("" when it may): an open incident pauses it, so
    nothing is removed while evidence is being gathered. Backups keep running."""
    incident = open_incident(store)
    if incident is None:
        return ""
    return (
        f"scheduled prune is paused: incident open since {incident['opened']} "
        f"({incident.get('why') or 'no reason given'}); `safehold incident end` resumes it"
    )


def _run_steps(
    plan: Plan, job: Job, runner: StepRunner, tracker: ProblemTracker, result: JobResult
) -> None:
    for step in job.steps:
        outcome = runner(step)
        result.steps.append(outcome)
        if outcome.exit_code == ExitCode.INTERRUPTED:
            raise KeyboardInterrupt
        if not outcome.ok:
            result.exit_code = outcome.exit_code or ExitCode.ERROR
        if step.alert:
            key = f"job:{step.name}"
            problems = [] if outcome.ok else [failure_alert(plan, step, outcome)]
            result.alerts.extend(tracker.report(problems, checked=[key], reporter=step.name))
        # A backup that failed completely leaves nothing new to copy; a partial one does.
        if not outcome.ok and outcome.exit_code != ExitCode.PARTIAL:
            break


def failure_alert(plan: Plan, step: Step, outcome: StepOutcome) -> Alert:
    reasons = [e for e in outcome.errors if not e.startswith("the snapshot is INCOMPLETE")]
    fix = outcome.hints[0] if outcome.hints else ""
    return job_failure_alert(
        plan, step.name, outcome.exit_code, reasons or outcome.errors or outcome.notes, fix
    )


def job_failure_alert(
    plan: Plan,
    job: str,
    exit_code: int,
    reasons: list[str],
    fix: str = "",
    *,
    by_hand: bool = False,
) -> Alert:
    """The one alert for a failed job (key `job:<name>`): what failed, why, what to do first.
    `by_hand`: the command ran outside a job (app/command_alerts.py), same key."""
    partial = exit_code == ExitCode.PARTIAL and job == "backup"
    subject = f"{_WHAT.get(job, job)} of {plan.app} ({plan.env})"
    lead = f"The {subject} started by hand" if by_hand else f"The scheduled {subject}"
    what = (
        f"{lead} {'saved an INCOMPLETE snapshot' if partial else 'failed'} on "
        f"{socket.gethostname()} (exit code {exit_code})."
    )
    why = "; ".join(reasons[:3]) or f"it exited with code {exit_code}"
    title = f"{job} {'INCOMPLETE' if partial else 'FAILED'}"
    fix = fix or _DEFAULT_FIX.get(job, "")
    return Alert(f"job:{job}", "error", title, what, why, fix, cause=why)


def _ping(pinger: Pinger, job: str, event: str, body: str, result: JobResult) -> None:
    error = pinger.ping(job, event, body)  # type: ignore[arg-type]
    if error:
        result.ping_errors.append(f"{event}: {error}")


def _record_start(store: StateStore, job: str, started: datetime) -> None:
    def change(document: Document) -> None:
        entry = document.setdefault(job, {})
        entry.update(status="running", started=started.isoformat(), pid=os.getpid())
        entry["host"] = socket.gethostname()

    store.update("jobs", change)


def _record_finish(store: StateStore, result: JobResult) -> None:
    def change(document: Document) -> None:
        entry = document.setdefault(result.job, {})
        finished = result.finished.isoformat()
        status = "interrupted" if result.interrupted else "ok" if result.ok else "failed"
        entry.update(status=status, finished=finished, exit_code=result.exit_code)
        entry.pop("pid", None)
        entry["steps"] = {
            step.step: {"exit_code": step.exit_code, "ok": step.ok, "error": "; ".join(step.errors)}
            for step in result.steps
        }
        if status == "ok":
            entry["last_success"] = finished
        elif status == "failed":
            entry["last_failure"] = finished
            failed = [s for s in result.steps if not s.ok]
            entry["error"] = "; ".join(failed[0].errors[:3]) if failed else ""
        if status == "failed" and not entry["error"]:
            failed_notes = [n for s in result.steps if not s.ok for n in s.notes]
            entry["error"] = "; ".join(failed_notes[:3])
        undelivered = [d for sent in result.alerts for d in sent.failed]
        if undelivered:
            entry["alert_failed"] = f"{undelivered[0].channel}: {undelivered[0].error}"
        entry["ping_errors"] = result.ping_errors

    store.update("jobs", change)


def job_records(store: StateStore) -> Document:
    return store.read("jobs")


def unit_safe(text: str) -> str:
    """`text` as part of a unit or file name."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def plan_path(plan: Plan) -> Path:
    return plan.file if plan.file is not None else plan.base_dir / "safehold.toml"


def job_environment(plan: Plan, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a job's commands get: the plan's environment, the plan folder's .env
    under this process's own variables (systemd and cron start jobs without your shell; the
    commands themselves follow the same rule, so a typed command finds the same password)."""
    return plan_environment(plan.base_dir, environ)
