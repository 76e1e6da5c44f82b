"""`safehold rescue --as-of TIME`: put a versioned S3 bucket back as it was at TIME, then check."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from safehold.app.opener import open_destination
from safehold.app.rescue import RescuePlan, RescueResult, execute_rescue, locate, plan_rescue
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import step_progress
from safehold.errors import ExitCode, UsageError
from safehold.policy.duration import MOMENT_EXAMPLES, DurationError, parse_moment
from safehold.redaction import redact

_SHOWN = 50  # steps listed by name before "… and N more"


@click.command()
@click.option(
    "--as-of", "as_of", required=True, help=f"The time to go back to, like {MOMENT_EXAMPLES}."
)
@click.option("--dest", "destination", help="The plan destination (default: the first).")
@click.option("--dry-run", is_flag=True, help="Only list what would be done.")
@click.option("--yes", is_flag=True, help="Change the bucket (without it, only --dry-run runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the result as JSON.")
@pass_state
def rescue(
    state: CliState,
    as_of: str,
    destination: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> int:
    """Undo deletes and overwrites in a versioned S3 bucket: make the newest version as of
    TIME of every object current again (delete markers removed, overwritten objects put back,
    newer objects hidden; no version is deleted), then check the repository with --read-data.
    Stop backups to the bucket first."""
    try:
        moment = parse_moment(as_of)
    except DurationError as err:
        raise UsageError(f"--as-of: {err}", hint=f"write it like {MOMENT_EXAMPLES}") from None
    environ = state.environ()
    plan = None
    if not state.explicit_repository() and state.has_plan():
        plan = state.plan()
    backend = locate(plan, destination, state.repo_options, environ)
    rescue_plan = plan_rescue(backend, moment, datetime.now(UTC))
    if not dry_run and not yes and rescue_plan.steps:
        raise UsageError(
            f"rescue would change {len(rescue_plan.steps)} object(s) in {backend.location}",
            hint="see them with --dry-run, then run again with --yes",
        )
    if dry_run or (not rescue_plan.steps and not yes):
        _report_plan(state, rescue_plan, as_json, dry_run=True)
        return ExitCode.OK

    def reopen() -> Any:
        if plan is not None:
            return open_destination(plan, destination, environ)
        return state.open_request(state.repo_options)

    with step_progress(state) as progress:
        result = execute_rescue(backend, rescue_plan, reopen, progress)
    _report_result(state, result, as_json)
    return ExitCode.OK if result.ok else ExitCode.ERROR


def _plan_lines(rescue_plan: RescuePlan) -> list[str]:
    counts = {kind: sum(s.kind == kind for s in rescue_plan.steps)
              for kind in ("unhide", "put-back", "hide")}  # fmt: skip
    lines = [
        f"{rescue_plan.location} as of {rescue_plan.as_of.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: "
        f"{rescue_plan.objects} objects ({rescue_plan.versions} versions and delete markers), "
        f"{rescue_plan.unchanged} unchanged",
        f"{counts['unhide']} to undelete, {counts['put-back']} to put back, "
        f"{counts['hide']} to hide",
    ]
    lines += [f"  {step.describe()}" for step in rescue_plan.steps[:_SHOWN]]
    if len(rescue_plan.steps) > _SHOWN:
        lines.append(f"  … and {len(rescue_plan.steps) - _SHOWN} more (--json lists all)")
    return lines


def _report_plan(state: CliState, rescue_plan: RescuePlan, as_json: bool, dry_run: bool) -> None:
    for warning in rescue_plan.warnings:
        state.warn(warning)
    if as_json:
        state.emit_json({**rescue_plan.as_dict(), "dry_run": dry_run})
        return
    for line in _plan_lines(rescue_plan):
        state.say(line)
    if not rescue_plan.steps:
        state.say("nothing to do: every object is as it was then")
    else:
        state.say("dry run: nothing was changed; run again with --yes to do it")


def _report_result(state: CliState, result: RescueResult, as_json: bool) -> None:
    report = result.check
    for warning in result.plan.warnings:
        state.warn(warning)
    if as_json:
        state.emit_json(
            {
                **result.plan.as_dict(),
                "dry_run": False,
                "done": result.done,
                "failed": result.failed,
                "check_error": result.check_error or None,
                "check": None
                if report is None
                else {
                    "ok": report.ok,
                    "errors": report.errors,
                    "snapshots_checked": report.snapshots_checked,
                    "packs_read": report.packs_read,
                },
                "ok": result.ok,
            }
        )
        return
    for line in _plan_lines(result.plan):
        state.say(line)
    state.say(f"rescued: {result.done} of {len(result.plan.steps)} object(s) changed")
    for failure in result.failed:
        click.echo(redact(f"error: {failure}"), err=True)
    if result.check_error:
        click.echo(redact(f"error: the check could not run: {result.check_error}"), err=True)
        if result.check_hint:
            click.echo(redact(f"hint: {result.check_hint}"), err=True)
    if report is not None:
        for error in report.errors:
            click.echo(redact(f"error: {error}"), err=True)
        state.say(
            f"check --read-data: {report.snapshots_checked} snapshots, read "
            f"{report.packs_read} packs: "
            + ("no errors were found" if report.ok else f"{len(report.errors)} error(s) found")
        )


COMMANDS = [rescue]
