"""Incident mode: incident start, status, end (app/incident.py). The hook that records every
other safehold command run while an incident is open is cli/timeline.py."""

from __future__ import annotations

import shlex
from typing import Any

import click

from safehold.app.incident import end_incident, list_incidents, start_incident
from safehold.app.incident_log import open_incident
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import backup_progress
from safehold.errors import ExitCode, InterruptedError_
from safehold.ops.state import state_store
from safehold.plan.models import FilesConfig, Plan


@click.group()
def incident() -> None:
    """Incident mode: freeze writes, hold evidence, see the scope, record what was done."""


@incident.command("start")
@click.option("--why", default="", help="What happened, in a few words (kept in the record).")
@click.option("--json", "as_json", is_flag=True, help="Print the incident as JSON.")
@pass_state
def start(state: CliState, why: str, as_json: bool) -> int:
    """Run the plan's freeze command, take a held evidence snapshot of every source, pause
    scheduled prune, and print the scope: per table rows now against the last good backup,
    per files source the files removed, added and changed since it."""
    plan = state.require_plan("incident start")
    store = state_store(plan, state.environ())
    steps = (lambda text: None) if as_json else (lambda text: state.say(f"... {text}"))
    try:
        # the evidence backup's progress goes to stderr: stdout is the incident (or its JSON)
        with backup_progress(state) as progress:
            result = start_incident(
                lambda: state.open(plan),
                plan,
                store,
                why=why,
                environ=_child_environ(state, plan),
                on_step=steps,
                progress=progress,
            )
    except (InterruptedError_, KeyboardInterrupt) as err:
        if open_incident(store) is None:  # stopped before it opened
            raise
        message = err.message if isinstance(err, InterruptedError_) else "interrupted"
        raise InterruptedError_(
            f"incident start {message}",
            hint="the incident is OPEN on this machine, perhaps without its evidence snapshot "
            "or scope: `safehold incident status` shows what was done; take the evidence with "
            "`safehold backup --reason evidence`; `safehold incident end` closes it",
        ) from None
    document = result.document
    if as_json:
        state.emit_json(document)
    else:
        state.say(f"incident opened {document['opened'][:19]}: {document['why']}")
        if result.freeze is not None:
            verdict = "ok" if result.freeze.ok else f"FAILED (exit code {result.freeze.exit_code})"
            state.say(f"  freeze `{result.freeze.command}`: {verdict}")
        else:
            state.say("  freeze: the plan has no [incident] freeze command; stop writes by hand")
        if result.evidence is not None:
            state.say(
                f"  evidence snapshot {result.evidence.short_id} saved as "
                f"{result.evidence.name} (held: forget never removes it)"
            )
        for failure in result.evidence_failed:
            state.say(f"  evidence FAILED for {failure}")
        if document.get("repository_error"):
            state.say(
                "  the incident is open on this machine only (no repository): fix the "
                "repository access; if it is gone, read a copy: `safehold -r COPY snapshots`"
            )
        state.say("  scheduled prune is paused until `safehold incident end`; backups go on")
        state.say("scope (live now against the last good backup of each source):")
        for line in document.get("scope_lines") or []:
            state.say(f"  {line}")
        state.say("next:")
        for line in next_steps(plan, document):
            state.say(f"  {line}")
    if result.freeze is not None and not result.freeze.ok:
        state.warn("the freeze command FAILED: writes may still be going on")
    return ExitCode.OK if result.ok else ExitCode.PARTIAL


def next_steps(plan: Plan, document: dict[str, Any]) -> list[str]:
    """The commands that usually come next, for this plan's sources and their baselines."""
    lines: list[str] = []
    for scope in document.get("scope") or []:
        baseline, name = scope.get("baseline") or "latest", scope.get("source", "")
        if scope.get("error"):
            continue
        config = plan.source(name)
        ref = shlex.quote(baseline)
        if isinstance(config, FilesConfig):
            folder = shlex.quote(str(config.paths[0]))
            lines.append(
                f"safehold restore {ref} --source {name} --into {folder} --only-missing --dry-run"
            )
        elif scope.get("tables"):
            lines.append(f"safehold db diff {ref} --source {name}")
            lines.append(f"safehold db recover {ref} --source {name} --dry-run")
    lines.append("safehold incident status")
    lines.append("safehold incident end")
    return lines


@incident.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the incident as JSON.")
@pass_state
def status(state: CliState, as_json: bool) -> None:
    """What was done so far in the open incident, with times (else the last incident)."""
    plan = state.require_plan("incident status")
    store = state_store(plan, state.environ())
    document = open_incident(store)
    if document is None:
        records = list_incidents(state.open(plan), plan)
        if as_json:
            state.emit_json({"open": False, "last": records[0].to_json() if records else None})
            return
        state.say("no incident is open")
        if records:
            last = records[0]
            ended = (last.end or {}).get("ended") or "never ended"
            state.say(f"last: {last.opened[:19]} to {str(ended)[:19]}: {last.why}")
        return
    if as_json:
        state.emit_json({"open": True, **document})
        return
    state.say(
        f"incident OPEN since {document['opened'][:19]}: {document.get('why')} "
        f"(by {document.get('who')})"
    )
    evidence = document.get("evidence") or {}
    if evidence.get("name"):
        state.say(f"evidence snapshot: {evidence['name']} (held)")
    state.say("scope at start:")
    for line in document.get("scope_lines") or []:
        state.say(f"  {line}")
    state.say("timeline:")
    for event in document.get("timeline") or []:
        code = f" (exit code {event['exit_code']})" if event.get("exit_code") else ""
        state.say(f"  {str(event.get('at'))[:19]}  {event.get('what')}{code}")
        for detail in event.get("details") or []:
            state.say(f"      {detail}")
    state.say("scheduled prune is paused; `safehold incident end` runs unfreeze and resumes it")


@incident.command("end")
@click.option(
    "--skip-unfreeze",
    is_flag=True,
    help="Do not run the unfreeze command (you allowed writes again by hand).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the incident record as JSON.")
@pass_state
def end(state: CliState, skip_unfreeze: bool, as_json: bool) -> None:
    """Run the plan's unfreeze command, resume scheduled prune, and write the incident record
    (the timeline of what ran, with times) into the repository."""
    plan = state.require_plan("incident end")
    repo = state.open(plan)
    store = state_store(plan, state.environ())
    result = end_incident(
        repo, plan, store, skip_unfreeze=skip_unfreeze, environ=_child_environ(state, plan)
    )
    record = result.record
    if as_json:
        state.emit_json(record.to_json())
        return
    if result.unfreeze is not None:
        state.say(f"unfreeze `{result.unfreeze.command}`: ok")
    state.say(f"incident ended: {record.why} (opened {record.opened[:19]})")
    state.say("scheduled prune resumed")
    evidence = record.start.get("evidence") or {}
    if evidence.get("name"):
        state.say(
            f"evidence snapshot {evidence['name']} stays held; `safehold unhold "
            f"{evidence['name']}` when it is no longer needed"
        )
    state.say(
        f"incident record written to the repository ({len(record.timeline)} events); "
        "`safehold runbook` includes it"
    )


def _child_environ(state: CliState, plan: Plan) -> dict[str, str]:
    """What freeze and unfreeze run with: the plan's .env under this process's variables."""
    return dict(state.environ())


COMMANDS: list[click.Command] = [incident]
