"""`safehold db diff` and `safehold db recover` (app/dbdiff.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode
from safehold.redaction import redact
from safehold.repo.snapshot import Snapshot


@click.group()
def db() -> None:
    """Row-level work on a database source: diff a snapshot against live, copy rows back."""


def _progress(state: CliState) -> Callable[[str], None]:
    def show(text: str) -> None:
        state.err.print(redact(text), markup=False, style="dim")

    return show


def _value(value: Any) -> str:
    text = "NULL" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in row.items())


def diff_lines(diff: Any) -> list[str]:
    """The human form of a DbDiff."""
    lines = [
        f"db diff: source {diff.source} ({diff.kind}), snapshot {diff.snapshot_id[:8]} "
        f"{diff.snapshot_name or ''} ({diff.snapshot_time[:19]}) against live".replace("  ", " "),
        f"  compared in {diff.scratch}, {diff.seconds:.1f} s",
    ]
    for table in diff.tables:
        live = "absent" if table.live_rows is None else f"{table.live_rows:,}"
        changed = "?" if table.changed is None else f"{table.changed:,}"
        by = (
            f"by primary key ({', '.join(table.key)})"
            if table.key
            else "by whole-row hash (no primary key)"
        )
        lines.append(
            f"  {table.table}: {table.missing:,} missing, {table.added:,} added, {changed} changed"
            f"  (snapshot {table.snapshot_rows:,} rows, live {live}; {by})"
        )
        if table.changed_columns:
            cols = ", ".join(f"{c} ({n:,})" for c, n in table.changed_columns.items())
            lines.append(f"    changed columns: {cols}")
        for note in table.notes:
            lines.append(f"    note: {note}")
        for row in table.samples.get("missing", []):
            lines.append(f"    missing: {_row(row)}")
        for row in table.samples.get("added", []):
            lines.append(f"    added:   {_row(row)}")
        for change in table.samples.get("changed", []):
            what = ", ".join(
                f"{c}: {_value(v['snapshot'])} -> {_value(v['live'])}"
                for c, v in change["columns"].items()
            )
            lines.append(f"    changed: {_row(change['key'])}: {what}")
    lines.append(f"total: {diff.missing:,} missing, {diff.added:,} added, {diff.changed:,} changed")
    return lines


@db.command("diff")
@click.argument("snapshot")
@click.option("--source", "source_name", help="The database source of the plan.")
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="TABLE",
    help="Only this table (repeatable; `orders` also names `public.orders`).",
)
@click.option(
    "--samples",
    default=5,
    show_default=True,
    type=int,
    help="Sample rows shown per kind of difference and table.",
)
@click.option("--reason", help="`latest` is the newest snapshot of this reason.")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
@pass_state
def diff_command(
    state: CliState,
    snapshot: str,
    source_name: str | None,
    tables: tuple[str, ...],
    samples: int,
    reason: str | None,
    as_json: bool,
) -> int:
    """Rows missing from live, added since and changed, per table, against SNAPSHOT.

    The snapshot is restored into a scratch database (never production) and compared there.
    """
    from safehold.app.dbdiff import plan_db_diff, run_db_diff

    plan = state.plan([source_name] if source_name else None)
    repo = state.open(plan)
    diff_plan = plan_db_diff(
        repo,
        plan,
        snapshot,
        source_name=source_name,
        tables=tables,
        samples=samples,
        reason=reason,
        environ=state.environ(),
    )
    progress = None if as_json or state.quiet else _progress(state)
    result = run_db_diff(repo, diff_plan, progress=progress)
    label = result.snapshot_name or result.snapshot_id[:8]
    state.incident_notes.append(
        f"db diff {result.source} against {label}: {result.missing:,} missing, "
        f"{result.added:,} added, {result.changed:,} changed"
    )
    if as_json:
        state.emit_json(result.to_json())
    else:
        for line in diff_lines(result):
            state.say(line)
    return ExitCode.OK


@db.command("recover")
@click.argument("snapshot")
@click.option("--source", "source_name", help="The database source of the plan.")
@click.option(
    "--table", "tables", multiple=True, metavar="TABLE", help="Only this table (repeatable)."
)
@click.option(
    "--changed",
    type=click.Choice(["keep", "restore"]),
    default="keep",
    show_default=True,
    help="Rows changed since the snapshot: keep live's values, or restore the snapshot's.",
)
@click.option(
    "--skip-conflicts",
    is_flag=True,
    help="Write the other rows when some conflict (a unique key now taken).",
)
@click.option("--dry-run", "-n", is_flag=True, help="Print the SQL and the counts; write nothing.")
@click.option("--yes", is_flag=True, help="Confirm writing into the live database.")
@click.option("--reason", help="`latest` is the newest snapshot of this reason.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_state
def recover_command(
    state: CliState,
    snapshot: str,
    source_name: str | None,
    tables: tuple[str, ...],
    changed: str,
    skip_conflicts: bool,
    dry_run: bool,
    yes: bool,
    reason: str | None,
    as_json: bool,
) -> int:
    """Copy the rows missing from live back from SNAPSHOT, in one transaction.

    Rows added since are never deleted; changed rows stay unless --changed restore. An
    evidence snapshot of the source is taken first.
    """
    from safehold.app.dbdiff import execute_db_recover, plan_db_recover

    plan = state.plan([source_name] if source_name else None)
    repo = state.open(plan)
    recover_plan = plan_db_recover(
        repo,
        plan,
        snapshot,
        source_name=source_name,
        tables=tables,
        changed=changed,
        skip_conflicts=skip_conflicts,
        dry_run=dry_run,
        yes=yes,
        reason=reason,
        environ=state.environ(),
    )

    def say_evidence(evidence: Snapshot) -> None:
        state.incident_notes.append(f"evidence snapshot {evidence.name}")
        if not as_json:
            state.say(f"evidence snapshot {evidence.short_id} saved as {evidence.name} (held)")

    progress = None if as_json or state.quiet else _progress(state)
    result = execute_db_recover(
        repo, recover_plan, progress=progress, redact=plan.redactor(), on_evidence=say_evidence
    )
    if result.written:
        state.incident_notes.append(
            f"db recover {result.diff.source}: {result.inserted:,} row(s) inserted, "
            f"{result.updated:,} updated"
        )
    if as_json:
        state.emit_json(result.to_json())
    else:
        for line in recover_lines(result):
            state.say(line)
    if result.blocked:
        click.echo(
            f"error: {result.conflicts} conflict(s): nothing was written\n"
            "hint: resolve them, or add --skip-conflicts to write the other rows",
            err=True,
        )
        return ExitCode.ERROR
    if result.written and any(result.after.values()):
        return ExitCode.PARTIAL
    return ExitCode.OK


def recover_lines(result: Any) -> list[str]:
    diff = result.diff
    mode = "dry run" if result.dry_run else "db recover"
    lines = [
        f"{mode}: source {diff.source} ({diff.kind}) from snapshot {diff.snapshot_id[:8]} "
        f"{diff.snapshot_name or ''}".replace("  ", " ").rstrip()
    ]
    if not result.steps:
        lines.append(
            "  nothing to copy back: no row is missing"
            + ("" if result.changed == "keep" else " or changed")
        )
    for step in result.steps:
        lines.append(
            f"  {step.table}: {step.inserts:,} row(s) to insert, "
            f"{step.updates:,} to update, {len(step.conflicts):,} conflict(s)"
        )
        for statement in step.statements:
            lines.append(f"    {statement}")
        for sequence in step.sequences:
            lines.append(f"    {sequence}")
        for conflict in step.conflicts[:20]:
            lines.append(f"    CONFLICT {conflict.describe()}")
        if len(step.conflicts) > 20:
            lines.append(f"    ... and {len(step.conflicts) - 20} more conflict(s)")
    kept = sum(t.added for t in diff.tables)
    changed = sum(t.changed or 0 for t in diff.tables)
    lines.append(f"  rows added since the snapshot: {kept:,} (kept, never deleted)")
    if result.changed == "keep":
        lines.append(
            f"  rows changed since the snapshot: {changed:,} (kept as they are; "
            "--changed restore puts the old values back)"
        )
    if result.dry_run:
        lines.append(
            "dry run: nothing was written; an evidence snapshot is taken first when it runs"
        )
    elif result.written:
        lines.append(
            f"written in one transaction: {result.inserted:,} inserted, {result.updated:,} updated"
        )
        for table, missing in result.after.items():
            lines.append(f"  check: {table}: {missing:,} row(s) still missing")
    return lines


COMMANDS = [db]
