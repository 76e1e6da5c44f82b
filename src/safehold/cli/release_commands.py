"""The release ledger and rollback: release start/finish/watch, releases, rollback
(app/releases.py, app/rollback.py, ops/release_watch.py)."""

from __future__ import annotations

import click

from safehold.app.releases import (
    Release,
    finish_release,
    load_ledger,
    release_config,
    start_release,
)
from safehold.app.rollback import RollbackPlan, execute_rollback, plan_rollback
from safehold.cli.backup_commands import copy_after_plan_backup
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import backup_progress
from safehold.errors import BackupInterruptedError, ExitCode, UsageError
from safehold.ops.alerting import notifier_for
from safehold.ops.release_watch import Reading, watch_release
from safehold.ops.state import now_local, state_store
from safehold.policy.duration import parse_duration


@click.group()
def release() -> None:
    """The release ledger: a held pre-deploy snapshot and the migrations of every deploy."""


@release.command("start")
@click.option("--id", "release_id", required=True, help="The release, like v42 or the git tag.")
@click.option("--note", help="What the release is, in a few words.")
@click.option("--git-sha", help="The commit being deployed (used by rollback_command).")
@click.option("--lint", "lint", multiple=True, metavar="PATH",
              help="Lint these migration files first (repeatable); exit 4 on a change with no"
              " way back, after the snapshot.")  # fmt: skip
@click.option("--allow", multiple=True, metavar="RULE", help="A lint rule to accept.")
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
@pass_state
def start(
    state: CliState,
    release_id: str,
    note: str | None,
    git_sha: str | None,
    lint: tuple[str, ...],
    allow: tuple[str, ...],
    as_json: bool,
) -> int:
    """Before a deploy: lint, note the applied migrations and schema, take the held snapshot.

    A deploy script: `safehold release start --id $REL --lint migrations/ || exit 1`.
    """
    plan = state.require_plan("release start")
    repo = state.open()
    try:
        # the snapshot's progress goes to stderr: stdout is the release (or its JSON)
        with backup_progress(state) as progress:
            result = start_release(
                repo, plan, release_id, note=note, git_sha=git_sha, lint=lint, allow=allow,
                progress=progress,
            )  # fmt: skip
    except BackupInterruptedError as err:
        err.hint = (
            f"no pre-deploy snapshot and no release {release_id} were recorded: do not deploy "
            f"yet; run `safehold release start --id {release_id}` again (it uploads only what "
            "is missing)"
        )
        raise
    copy_after_plan_backup(state, plan, as_json)
    risky = result.lint is not None and bool(result.lint.findings)
    code = ExitCode.UNSAFE if risky else ExitCode.OK
    if not result.backup.snapshot.complete:
        code = ExitCode.PARTIAL
    if as_json:
        state.emit_json({**result.release.to_json(), "unheld": result.unheld,
                         "lint_findings": [f.to_json() for f in result.lint.findings]
                         if result.lint else [], "exit_code": code})  # fmt: skip
        return code
    item = result.release
    state.say(f"release {item.id} started: snapshot {item.snapshot[:8]} {item.snapshot_name}"
              " (held)")  # fmt: skip
    state.say(f"  migrations applied so far: {len(item.migrations_before)} ({item.framework})")
    if result.lint is not None:
        for finding in result.lint.findings:
            state.say(f"  {finding.one_line()}")
        if risky:
            count = len(result.lint.findings)
            state.say(
                f"  {count} change(s) with no way back: the snapshot above is a pre-migration"
                " snapshot; stop the deploy or accept them"
            )
        else:
            state.say(f"  lint: no change without a way back in {len(result.lint.files)} file(s)")
    for old in result.unheld:
        state.say(f"  the snapshot of release {old} is no longer held (keep = "
                  f"{release_config(plan).keep})")  # fmt: skip
    if code == ExitCode.PARTIAL:
        click.echo("error: the pre-deploy snapshot is INCOMPLETE; a source failed", err=True)
    return code


@release.command("finish")
@click.option("--id", "release_id", required=True, help="The release started before.")
@click.option("--status", type=click.Choice(["ok", "failed"]), default="ok", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
@pass_state
def finish(state: CliState, release_id: str, status: str, as_json: bool) -> None:
    """After a deploy: note the migrations it applied and the schema change."""
    plan = state.require_plan("release finish")
    repo = state.open()
    item = finish_release(repo, plan, release_id, "ok" if status == "ok" else "failed")
    if as_json:
        state.emit_json(item.to_json())
        return
    state.say(f"release {item.id} finished ({item.status})")
    state.say(f"  migrations applied: {', '.join(item.applied) or 'none'}")
    change = item.change
    state.say(f"  schema change: {change.summary() if change else 'unknown'}")
    state.say(f"  reversible by code rollback: {_reversible(item)}")


@release.command("watch")
@click.option("--id", "release_id", help="The release (default: the newest).")
@click.option(
    "--for", "duration", help="How long to watch, like 10m (default: [release] watch_for)."
)
@click.option("--every", help="How often to read the signals, like 15s.")
@click.option("--failures", default=2, show_default=True, type=click.IntRange(1, 100),
              help="Bad readings in a row that make a signal bad.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the readings as JSON.")
@pass_state
def watch(
    state: CliState,
    release_id: str | None,
    duration: str | None,
    every: str | None,
    failures: int,
    as_json: bool,
) -> int:
    """After a deploy: read [[release.signals]]; alert and exit 1 when one goes bad."""
    plan = state.require_plan("release watch")
    config = release_config(plan)
    if not config.signals:
        raise UsageError(
            "the plan has no [[release.signals]] to watch",
            hint='add one, like type = "http", url = "https://app/health"',
        )
    repo = state.open()
    if release_id is None:
        ledger = load_ledger(repo)
        if not ledger:
            raise UsageError("the ledger has no release yet", hint="run safehold release start")
        release_id = ledger[-1].id
    store = state_store(plan, state.environ())

    def show(reading: Reading) -> None:
        if not as_json:
            mark = "ok " if reading.good else "BAD"
            state.say(f"{reading.at:%H:%M:%S} {mark} {reading.signal}: {reading.detail}")

    result = watch_release(
        repo, plan, release_id, notifier_for(plan, store),
        duration=parse_duration(duration) if duration else config.watch_for,
        every=parse_duration(every) if every else config.watch_every,
        failures=failures, clock=now_local, observe=show,
    )  # fmt: skip
    if as_json:
        state.emit_json(result.to_json())
    elif result.bad is None:
        state.say(f"release {result.release}: every signal stayed good")
    if result.bad is not None:
        sent = ", ".join(result.alerted_to) or "no channel"
        click.echo(f"error: release {result.release}: {result.bad.signal} went bad: "
                   f"{result.bad.detail} (alert sent to {sent})", err=True)  # fmt: skip
        click.echo("hint: safehold rollback --dry-run shows whether rolling back is safe", err=True)
        return ExitCode.ERROR
    return ExitCode.OK


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the ledger as JSON.")
@pass_state
def releases(state: CliState, as_json: bool) -> None:
    """List the release ledger: release, time, snapshot, migrations, schema change, reversible."""
    state.require_plan("releases")
    ledger = load_ledger(state.open())
    if as_json:
        state.emit_json([item.to_json() for item in ledger])
        return
    if not ledger:
        state.say("no release yet: a deploy script runs safehold release start --id REL")
    for item in ledger:
        change = item.change
        status = item.status or "running"
        if item.rolled_back:
            status += ", rolled back"
        summary = change.summary() if change else "-"
        state.say(
            f"{item.id}  {item.started}  {status}  snapshot {item.snapshot[:8]}  "
            f"migrations +{len(item.applied)}  {summary}"
        )
        state.say(f"    reversible by code rollback: {_reversible(item)}")


@click.command()
@click.option("--to", "to", help="The release to go back to (default: the previous good one).")
@click.option("--dry-run", is_flag=True, help="Show the plan: safe or not, the data path.")
@click.option("--yes", is_flag=True, help="Run the rollback command.")
@click.option("--force", is_flag=True,
              help="Run the code rollback even when it is not safe alone (then follow the data"
              " path).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and result) as JSON.")
@pass_state
def rollback(
    state: CliState, to: str | None, dry_run: bool, yes: bool, force: bool, as_json: bool
) -> int:
    """Roll the code back to the previous good release, after saying whether that is safe."""
    plan = state.require_plan("rollback")
    repo = state.open()
    chosen = plan_rollback(repo, plan, to, state.environ())
    unsafe = ExitCode.UNSAFE if not chosen.safe else ExitCode.OK
    if dry_run or not yes:
        if as_json:
            state.emit_json({**chosen.to_json(), "dry_run": True})
        else:
            _show_plan(state, chosen)
            if not dry_run:
                state.say("nothing ran: add --yes to run the rollback command")
        return unsafe
    if not as_json:
        _show_plan(state, chosen)
    result = execute_rollback(repo, chosen, force=force, environ=state.environ())
    if as_json:
        state.emit_json({**chosen.to_json(), "dry_run": False, "exit_code": result.exit_code,
                         "output": result.output})  # fmt: skip
    else:
        if result.output.strip():
            state.say(result.output.rstrip())
        state.say(f"rolled back to {chosen.target.id}; recorded in the ledger")
        if not chosen.safe:
            state.say("now follow the data path above")
    return ExitCode.OK


def _show_plan(state: CliState, chosen: RollbackPlan) -> None:
    state.say(f"rollback: {chosen.current.id} -> {chosen.target.id}")
    state.say(f"  command: {chosen.command}")
    owners = ", ".join(chosen.owners) or "anyone (no [owners] rollback)"
    state.say(f"  who may run it: {owners}; you are {chosen.who}")
    if chosen.safe:
        state.say("  code rollback alone is safe: the migrations since then were additive")
        return
    state.say("  code rollback alone is NOT safe: " + "; ".join(chosen.reasons))
    state.say("  the data path (restore beside production, then copy back):")
    for number, step in enumerate(chosen.data_path, start=1):
        state.say(f"    {number}. {step}")


def _reversible(item: Release) -> str:
    reversible, why = item.reversible()
    word = {True: "yes", False: "no", None: "unknown"}[reversible]
    return f"{word} ({why})"


COMMANDS: list[click.Command] = [release, releases, rollback]
