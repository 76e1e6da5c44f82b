"""`safehold schedule install|show|remove|request-drill`, `safehold job NAME` (what timers,
cron and the daemon run) and `safehold run` (the foreground scheduler)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode, InterruptedError_, UsageError
from safehold.redaction import redact


@click.group("schedule")
def schedule() -> None:
    """Install, show and remove the plan's schedule (systemd timers or crontab lines)."""


@schedule.command("install")
@click.option("--systemd", "kind", flag_value="systemd", help="Write systemd units.")
@click.option("--crontab", "kind", flag_value="crontab", help="Write crontab lines.")
@click.option("--user", is_flag=True, help="systemd user units (~/.config/systemd/user).")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False),
    help="Write the units into this folder (not enabled).",
)
@click.option("--print", "print_only", is_flag=True, help="Print what would be installed.")
@pass_state
def schedule_install(
    state: CliState, kind: str | None, user: bool, unit_dir: str | None, print_only: bool
) -> None:
    """Install the plan's [schedule]: systemd timers (Persistent=true) where systemd runs,
    else crontab lines. Installing again replaces what was installed."""
    from safehold.ops.schedule_install import (
        choose_kind,
        crontab_lines,
        install_schedule,
        systemd_units,
    )
    from safehold.ops.state import now_local, state_store

    plan = state.plan()
    now = now_local()
    folder = Path(unit_dir).absolute() if unit_dir else None
    if print_only:
        chosen = kind or ("systemd" if folder is not None else None)
        if chosen is None:
            try:
                chosen = choose_kind(None, None, os.environ)
            except UsageError:
                chosen = "systemd"
        if chosen == "crontab":
            click.echo(redact("\n".join(crontab_lines(plan, now, os.environ))))
        else:
            for unit in systemd_units(plan, now, os.environ):
                click.echo(redact(f"### {unit.name}\n{unit.text}"))
        return
    chosen_kind = choose_kind(kind, folder, os.environ)  # type: ignore[arg-type]
    result = install_schedule(
        plan,
        state_store(plan, os.environ),
        now,
        os.environ,
        kind=chosen_kind,
        unit_dir=folder,
        user=user,
    )
    if result.kind == "crontab":
        state.say("installed crontab lines for: " + ", ".join(_timed(plan, now)))
    else:
        state.say(f"wrote {len(result.files)} systemd unit(s) into {result.where}")
        if result.enabled:
            state.say("enabled and started the timers")
    for note in result.notes:
        state.warn(note)
    state.say("see when each job runs next: `safehold schedule show`")


def _timed(plan: Any, now: Any) -> list[str]:
    from safehold.ops.jobs import timed_jobs

    return [f"{job.name} ({job.cron.text})" for job in timed_jobs(plan, now) if job.cron]


@schedule.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def schedule_show(state: CliState, as_json: bool) -> None:
    """What is installed, when each job runs next, and how its last run ended."""
    from safehold.ops.daemon import daemon_alive
    from safehold.ops.jobs import plan_jobs
    from safehold.ops.schedule_install import DOCUMENT, installed_problems, plan_changed
    from safehold.ops.state import now_local, pending_drill_request, state_store

    plan = state.plan()
    now = now_local()
    store = state_store(plan, os.environ)
    record = store.read(DOCUMENT)
    runs = store.read("jobs")
    rows: list[dict[str, Any]] = []
    for job in plan_jobs(plan, now).values():
        last = runs.get(job.name, {})
        rows.append(
            {
                "job": job.name,
                "schedule": job.cron.text if job.cron else _untimed(plan, job.name),
                "cron": job.cron.expression if job.cron else None,
                "when": job.cron.describe() if job.cron else None,
                "next_run": job.cron.next_after(now).isoformat() if job.cron else None,
                "runs": " then ".join(" ".join(step.args) for step in job.steps),
                "last_status": last.get("status"),
                "last_finished": last.get("finished"),
                "last_success": last.get("last_success"),
                "last_error": last.get("error") if last.get("status") == "failed" else None,
            }
        )
    problems = installed_problems(plan, store, os.environ) if record.get("kind") else []
    requested = pending_drill_request(store)
    info: dict[str, Any] = {
        "installed": record.get("kind"),
        "where": record.get("where"),
        "installed_at": record.get("installed_at"),
        "problems": problems,
        "plan_changed_since_install": plan_changed(plan, store, now),
        "daemon_running": daemon_alive(store, now),
        "drill_requested": requested,
        "jobs": rows,
    }
    if as_json:
        state.emit_json(info)
        return
    if plan.schedule is None:
        state.say("the plan has no [schedule] table: nothing runs by itself (add one)")
    if record.get("kind"):
        state.say(
            f"installed: {record['kind']} ({record.get('where')}) at {record.get('installed_at')}"
        )
    elif info["daemon_running"]:
        state.say("installed: no timers, but a `safehold run` daemon is running")
    else:
        state.say("installed: nothing (run `safehold schedule install`, or `safehold run`)")
    for problem in problems:
        state.say(f"PROBLEM: {problem} (run `safehold schedule install` again)")
    if info["plan_changed_since_install"]:
        state.say("the plan's schedule changed since: run `safehold schedule install` again")
    if requested is not None:
        state.say(f"drill requested: {requested.get('why')}")
    for row in rows:
        state.say(f"{row['job']}: {row['schedule']}" + (f" — {row['when']}" if row["when"] else ""))
        if row["next_run"]:
            state.say(f"  next run: {row['next_run']}")
        state.say(f"  runs: safehold {row['runs']}")
        if row["last_status"]:
            line = f"  last run: {row['last_status']} at {row['last_finished'] or '?'}"
            if row["last_error"]:
                line += f": {row['last_error']}"
            state.say(line)


def _untimed(plan: Any, job: str) -> str:
    from safehold.ops.jobs import schedule_of

    if job == "copy" and schedule_of(plan).copy_after_backup:
        return "after backup"
    return "off"


@schedule.command("remove")
@pass_state
def schedule_remove(state: CliState) -> None:
    """Remove the installed units or crontab lines."""
    from safehold.ops.schedule_install import remove_schedule
    from safehold.ops.state import state_store

    plan = state.plan()
    removed = remove_schedule(plan, state_store(plan, os.environ), os.environ)
    if not removed:
        state.say("nothing was installed")
    for item in removed:
        state.say(f"removed {item}")


@schedule.command("request-drill")
@click.option("--why", default="requested", show_default=True, help="Why (shown in reports).")
@pass_state
def schedule_request_drill(state: CliState, why: str) -> None:
    """Ask for a restore drill soon (after a schema change): the drill timer's path unit,
    the cron check or `safehold run` starts it within minutes."""
    from safehold.ops.state import request_drill, state_store

    plan = state.plan()
    request_drill(state_store(plan, os.environ), why)
    state.say(f"drill requested: {why}")


@click.command("job")
@click.argument("name", type=click.Choice(["backup", "copy", "prune", "drill", "watch"]))
@click.option("--if-requested", is_flag=True, help="drill: run only when one was requested.")
@pass_state
def job(state: CliState, name: str, if_requested: bool) -> int:
    """Run one scheduled job with its lock, pings, alerts and record (what timers, cron and
    `safehold run` start). A job already running is not started twice."""
    from safehold.ops.alerting import pinger_for, tracker_for
    from safehold.ops.jobs import find_job, job_environment, run_job, subprocess_runner
    from safehold.ops.state import now_local, pending_drill_request, state_store

    plan = state.plan()
    store = state_store(plan, os.environ)
    if if_requested and (name != "drill" or pending_drill_request(store) is None):
        return ExitCode.OK
    chosen = find_job(plan, name, now_local())
    runner = subprocess_runner(
        plan, job_environment(plan, os.environ), lambda line: click.echo(line, err=True)
    )
    result = run_job(
        plan,
        chosen,
        store=store,
        tracker=tracker_for(plan, store),
        pinger=pinger_for(plan, store),
        runner=runner,
        clock=now_local,
    )
    if result.skipped:
        state.say(f"job {name} not started: {result.skipped}")
        return ExitCode.OK
    for sent in result.alerts:
        for delivery in sent.deliveries:
            if delivery.ok:
                state.say(f"alert sent to {delivery.channel}: {sent.alert.title}")
            else:
                state.warn(f"alert to {delivery.channel} NOT delivered: {delivery.error}")
    for error in result.ping_errors:
        state.warn(f"ping not delivered: {error}")
    if result.interrupted:
        raise InterruptedError_(
            f"job {name} interrupted (SIGTERM or Ctrl-C); no alert was sent for it",
            hint="the repository is intact; the next scheduled run (or `safehold job "
            f"{name}`) starts it again",
        )
    return result.exit_code


@click.command("run")
@pass_state
def run(state: CliState) -> int:
    """Run the plan's schedule in the foreground (containers, PaaS workers): jobs start on
    time, never twice at once; runs missed while it was down are caught up once; SIGTERM
    stops it cleanly."""
    from safehold.ops.daemon import Daemon, process_launcher, service_launcher
    from safehold.ops.jobs import job_environment, timed_jobs
    from safehold.ops.state import now_local, pending_drill_request, state_store
    from safehold.ops.streamers import Supervisor, stream_services

    plan = state.plan()
    if plan.schedule is None:
        raise UsageError(
            "the plan has no [schedule] table: nothing to run",
            hint='add [schedule] with backup = "daily at 02:00" (the other jobs have defaults)',
        )
    store = state_store(plan, os.environ)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def say(message: str) -> None:
        if not state.quiet:
            click.echo(redact(message))
            sys.stdout.flush()

    daemon = Daemon(
        timed_jobs(plan, now_local()),
        launcher=process_launcher(plan, job_environment(plan, os.environ)),
        clock=now_local,
        wait=stop.wait,
        store=store,
        say=say,
        drill_requested=lambda: pending_drill_request(store) is not None,
        supervisor=Supervisor(
            stream_services(plan), service_launcher(plan, job_environment(plan, os.environ)), say
        ),
    )
    say(f"safehold run: scheduling {plan.name_prefix} (stop with SIGTERM or Ctrl-C)")
    try:
        daemon.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("safehold run: stopped")
    return ExitCode.OK


COMMANDS: list[click.Command] = [schedule, job, run]
