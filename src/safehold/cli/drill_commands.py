"""Commands that prove restores: drill, drills, runbook."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

import click

from safehold.cli.alerting import alerts_on_failure
from safehold.cli.context import CliState, pass_state
from safehold.drills.record import DrillRecord
from safehold.errors import ExitCode
from safehold.redaction import redact


def _when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def _print_record(state: CliState, record: DrillRecord) -> None:
    from safehold.drills.runner import format_duration_s

    state.say("")
    state.say("phases:")
    for phase in record.phases:
        mark = "" if phase.ok else "  FAILED"
        state.say(f"  {phase.name:<24} {format_duration_s(phase.seconds):>8}{mark}")
    state.say("checks:")
    for check in record.checks:
        mark = "WARN" if check.ok and check.warning else ("ok" if check.ok else "FAIL")
        detail = f": {check.detail}" if check.detail else ""
        state.say(f"  {mark:<4} {check.name}{detail}")
    verdict = "PASSED" if record.passed else "FAILED"
    rto = format_duration_s(record.rto_measured_s)
    rto_target = format_duration_s(record.rto_target_s or 0)
    rpo = format_duration_s(record.data_age_s)
    rpo_target = format_duration_s(record.rpo_target_s or 0)
    state.say("")
    state.say(
        f"drill {verdict}: snapshot {record.snapshot_name or record.snapshot_id[:8]}; "
        f"time to restore {rto} (RTO target {rto_target}); data age {rpo} "
        f"(RPO target {rpo_target})"
    )
    for reason in record.reasons:
        state.say(f"  - {reason}")


@click.command()
@click.argument("snapshot", default="latest")
@click.option(
    "--from", "destination", help="Drill from this plan destination (default: the first)."
)
@click.option("--no-save", is_flag=True, help="Do not store the drill record in the repository.")
@click.option("--identity", type=click.Path(dir_okay=False),
              help="An age identity file: decrypt the secrets sources too "
              "(default: SAFEHOLD_AGE_IDENTITY_FILE, the plan's identity_command).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the drill record as JSON.")
@pass_state
@alerts_on_failure("drill")
def drill(
    state: CliState, snapshot: str, destination: str | None, no_save: bool,
    identity: str | None, as_json: bool,
) -> int:  # fmt: skip
    """Restore SNAPSHOT (default: the newest complete one) into a throwaway scratch
    environment, check it, time it against the plan's RTO/RPO, tear it down, and record it.

    Exit code 0 when the drill passed, 1 when it failed."""
    from safehold.drills.runner import DrillRequest, drill_plan

    plan = state.require_plan("drill")
    chosen = plan.destination(destination)
    request = DrillRequest(snapshot=snapshot, destination=chosen.name,
                           scratch_parent=os.environ.get("SAFEHOLD_DRILL_TMPDIR"),
                           identity=identity)  # fmt: skip
    quiet = as_json or state.quiet
    with contextlib.ExitStack() as stack:
        # on a terminal: a live spinner with the current step (rich), every step kept above it
        status = stack.enter_context(state.err.status("drill")) if state.show_progress else None

        def observe(message: str) -> None:
            if quiet:
                return
            state.err.print(redact(message), markup=False)
            if status is not None:
                status.update(redact(message))

        record = drill_plan(plan, request, state.environ(), observe=observe, save=not no_save)
    state.failure_details.extend(record.reasons)
    if as_json:
        state.emit_json({**record.to_json(), "id": record.record_id})
    else:
        _print_record(state, record)
        if record.record_id:
            state.say(f"drill record {record.record_id[:8]} saved in destination {chosen.name}")
    return ExitCode.OK if record.passed else ExitCode.ERROR


@click.command()
@click.option("--from", "destination", help="Read drill records of this plan destination.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def drills(state: CliState, destination: str | None, as_json: bool) -> None:
    """List the drills recorded in the repository, oldest first."""
    from safehold.drills.record import load_drills
    from safehold.drills.runner import format_duration_s

    if state.has_plan() and not state.explicit_repository():
        from safehold.app.opener import open_destination

        plan = state.plan()
        repo = open_destination(plan, destination, state.environ())
        records = load_drills(repo, plan.app, plan.env)
    else:
        records = load_drills(state.open())
    if as_json:
        state.emit_json([{**r.to_json(), "id": r.record_id} for r in records])
        return
    if not records:
        state.say("no drills yet: run `safehold drill`")
        return
    state.say(f"{'ID':<9} {'When':<16}  {'Result':<6} {'RTO':>8} {'Data age':>9}  Snapshot")
    for record in records:
        result = "pass" if record.passed else "FAIL"
        state.say(
            f"{record.record_id[:8]:<9} {_when(record.started):<16}  {result:<6} "
            f"{format_duration_s(record.rto_measured_s):>8} "
            f"{format_duration_s(record.data_age_s):>9}  "
            f"{record.snapshot_name or record.snapshot_id[:8]}"
        )
        for reason in record.reasons[:3]:
            state.say(f"{'':<27}- {reason}")


@click.command()
@click.option("-o", "--output", help="Where to write the Markdown runbook (default: RUNBOOK.md "
              "next to the plan file); - prints it.")  # fmt: skip
@click.option("--html", "html_path", help="Where to write the printable HTML page (default: "
              "the Markdown path with .html).")  # fmt: skip
@click.option("--from", "destination", help="Read the last drill from this plan destination.")
@pass_state
def runbook(
    state: CliState, output: str | None, html_path: str | None, destination: str | None
) -> None:
    """Write RUNBOOK.md and a printable RUNBOOK.html: who decides, where every copy lives,
    the exact restore commands the last drill executed, how to verify, and the last drill's
    measured RTO/RPO. Secrets are never written, only where they live."""
    from safehold.app.incident import list_incidents
    from safehold.app.opener import open_destination
    from safehold.drills.record import latest_drill
    from safehold.drills.runbook import build_runbook, to_html, to_markdown

    plan = state.require_plan("runbook")
    repo = open_destination(plan, destination, state.environ())
    last = latest_drill(repo, plan.app, plan.env)
    incidents = list_incidents(repo, plan)
    blocks = build_runbook(plan, last, datetime.now().astimezone(), incidents)
    markdown = to_markdown(blocks, plan, last)
    if output == "-":
        click.echo(markdown, nl=False)
        return
    md_path = Path(output) if output else plan.base_dir / "RUNBOOK.md"
    page_path = Path(html_path) if html_path else md_path.with_suffix(".html")
    md_path.write_text(markdown)
    page_path.write_text(to_html(blocks, plan, last))
    state.say(f"wrote {md_path} and {page_path}")
    if last is None:
        state.warn("no drill recorded yet: the runbook says so; run `safehold drill` first")
    elif not last.passed:
        state.warn("the last drill FAILED: the runbook says so; fix it and drill again")


COMMANDS: list[click.Command] = [drill, drills, runbook]
