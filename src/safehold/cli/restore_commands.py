"""Commands that bring data back: restore (files, a plan's sources, tables) and dump.

Apart from cli/backup_commands.py, so that a backup does not import the restore path
(app/restore.py, fs/restorer.py, the scope rules): each module loads only for its commands
(cli/main.py `LAZY_COMMANDS`)."""

from __future__ import annotations

import importlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from safehold.app.inspect import human_bytes
from safehold.app.restore import (
    RestorePlan,
    decision_summary,
    execute_file_restore,
    plan_file_restore,
)
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import restore_progress
from safehold.errors import ExitCode, UsageError
from safehold.repo.dump import dump_file
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions

if TYPE_CHECKING:  # the plan package (pydantic) loads only when a plan is used
    from safehold.app.plan_backup import Redact

_SHOWN = 40  # file decisions listed by a dry run (all with --json)


@click.command()
@click.argument("snapshot")
@click.option("-t", "--target", help="Directory to restore the files of the snapshot into.")
@click.option("--source", "source_name", help="With a plan: the source to restore.")
@click.option("--into", help="With a plan: where the source goes (a NEW database URL, path).")
@click.option("--to-production", is_flag=True,
              help="Allow --into to be the source's live location (an evidence snapshot is "
              "taken first). Needs --yes.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Confirm --to-production.")
@click.option("--no-roles", is_flag=True,
              help="Databases: do not create the roles/users the target lacks from the "
              "backup (grants to missing ones then fail).")  # fmt: skip
@click.option("--no-owner", is_flag=True,
              help="PostgreSQL: objects belong to the restoring user instead of their "
              "original owners (pg_restore --no-owner).")  # fmt: skip
@click.option("--reason", "reason", metavar="REASON",
              help="With a plan: `latest` is the newest snapshot of this reason.")  # fmt: skip
@click.option("-i", "--include", "includes", multiple=True,
              help="Restore only this path of the snapshot (repeatable).")  # fmt: skip
@click.option("--force", is_flag=True, help="Write into a non-empty target directory.")
@click.option("--table", "tables", multiple=True, metavar="TABLE",
              help="Databases: restore only this table into --into (repeatable).")  # fmt: skip
@click.option("--only-missing", is_flag=True,
              help="Files source into its live folder: restore only the files missing there; "
              "overwrite nothing, remove nothing.")  # fmt: skip
@click.option("--changed", type=click.Choice(["keep", "restore"]),
              help="Files source into its live folder: keep files changed since the backup "
              "(default with --only-missing) or put the snapshot's copy back (needs "
              "--to-production --yes).")  # fmt: skip
@click.option("--overwrite-newer", is_flag=True,
              help="Also replace live files newer than the snapshot's copy (never done "
              "without this).")  # fmt: skip
@click.option("--identity", type=click.Path(dir_okay=False),
              help="With a secrets source: the age identity file that decrypts it "
              "(default: SAFEHOLD_AGE_IDENTITY_FILE, the plan's identity_command).")  # fmt: skip
@click.option("--at", "at", metavar="MOMENT",
              help="PostgreSQL point-in-time: the data as it was at this moment "
              '("2026-01-14 16:02:00+00", or -10m for ten minutes ago).')  # fmt: skip
@click.option("--before-xid", type=int, help="Point-in-time: just before this transaction id.")
@click.option("--before-lsn", help="Point-in-time: just before this WAL position (0/16B3748).")
@click.option("--dry-run", "-n", is_flag=True,
              help="Print the restore plan (what, where, allowed); change nothing.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: status every --progress-interval, then the summary (with "
              "--dry-run: the plan).")  # fmt: skip
@pass_state
def restore(
    state: CliState,
    snapshot: str,
    target: str | None,
    source_name: str | None,
    into: str | None,
    to_production: bool,
    yes: bool,
    no_roles: bool,
    no_owner: bool,
    reason: str | None,
    includes: tuple[str, ...],
    force: bool,
    tables: tuple[str, ...],
    only_missing: bool,
    changed: str | None,
    overwrite_newer: bool,
    identity: str | None,
    at: str | None,
    before_xid: int | None,
    before_lsn: str | None,
    dry_run: bool,
    as_json: bool,
) -> int:
    """Restore into a NEW place: a plan source (--source, --into) or the files (--target).

    With --at (or --before-xid / --before-lsn) a PostgreSQL source is restored to that moment
    from its base backup and archived WAL: --into a new database URL, or a new data folder.

    Into a files source's live folder: --only-missing restores only what is gone there,
    --changed restore also puts back the snapshot's copy of changed files; a file newer than
    the snapshot's copy is never replaced without --overwrite-newer."""
    if tables:
        if only_missing or changed or overwrite_newer:
            raise UsageError(
                "--only-missing, --changed and --overwrite-newer are for files sources; "
                "--table copies whole tables into a new database",
                hint="bring rows back into a live table with `safehold db recover`",
            )
        if into is None or target is not None:
            raise UsageError(
                "--table restores into a database: give --source NAME --into URL",
                hint="e.g. safehold restore latest --source db --table orders "
                "--into postgresql://…/restored",
            )
        return _table_restore(
            state, snapshot, source_name, into, tables, to_production, yes, reason, dry_run,
            as_json,
        )  # fmt: skip
    if at is not None or before_xid is not None or before_lsn is not None:
        if target is not None or into is None:
            raise UsageError(
                "a point-in-time restore needs --into (a NEW database URL or a new data folder)",
                hint="e.g. --into postgresql://…/shop_restored",
            )
        if snapshot != "latest":
            raise UsageError("--at picks its base backup itself: use `latest`",
                             hint="safehold restore latest --source db --at …")  # fmt: skip
        # loaded only here: it brings psycopg and asyncio (~0.15 CPU-s every other restore and
        # backup would pay for nothing)
        pitr = importlib.import_module("safehold.cli.pitr_restore")
        return cast(int, pitr.pitr_restore(state, source_name, into, at, before_xid,
                                           before_lsn, dry_run, as_json))  # fmt: skip
    if target is None:
        if into is None:
            raise UsageError(
                "say where to restore: --target DIR for files, or --into TARGET for a source",
                hint="e.g. safehold restore latest --source db --into postgresql://…/restored",
            )
        accounts = AccountOptions(roles=not no_roles, owners=not no_owner)
        return _plan_restore(
            state, snapshot, source_name, into, to_production, yes, as_json, reason, dry_run,
            identity, accounts, FileChoices(only_missing, changed, overwrite_newer),
        )  # fmt: skip
    if into is not None or source_name is not None or identity is not None:
        raise UsageError("--target restores files; --source/--into restore a plan source")
    if only_missing or changed or overwrite_newer:
        raise UsageError(
            "--only-missing, --changed and --overwrite-newer restore into a files source's "
            "live folder",
            hint="use --source NAME --into LIVE-FOLDER with a plan",
        )
    if no_roles or no_owner:
        raise UsageError("--no-roles and --no-owner are for database sources (--source, --into)")
    repo = state.open()
    chosen = repo.find_snapshot(snapshot)
    plan = plan_file_restore(repo, chosen, target, includes=includes, force=force,
                             measure=dry_run)  # fmt: skip
    if dry_run:
        return _show_restore_plan(state, plan, as_json)
    started = time.monotonic()
    with restore_progress(state, as_json) as progress:
        stats = execute_file_restore(repo, plan, progress)
    for path, message in stats.errors:
        click.echo(f"error: {path}: {message}", err=True)
    for path, message in stats.warnings[:20]:
        state.warn(f"{path}: {message}")
    if as_json:
        state.emit_summary(
            {
                "snapshot_id": chosen.id,
                "target": target,
                "files": stats.files,
                "dirs": stats.dirs,
                "bytes_written": stats.bytes_written,
                "errors": [{"path": p, "message": m} for p, m in stats.errors],
                "seconds_elapsed": round(time.monotonic() - started, 3),
                "total_files": stats.files_total,
                "files_restored": stats.files,
                "total_bytes": stats.bytes_total,
                "bytes_restored": stats.bytes_written,
            }
        )
    else:
        state.say(
            f"restored snapshot {chosen.short_id} to {target}: {stats.files} files, "
            f"{stats.dirs} dirs, {human_bytes(stats.bytes_total)}"
        )
    if stats.errors:
        click.echo(
            f"warning: {len(stats.errors)} item(s) could not be restored; everything else was",
            err=True,
        )
        return ExitCode.PARTIAL
    return ExitCode.OK


@click.command()
@click.argument("snapshot")
@click.argument("path")
@pass_state
def dump(state: CliState, snapshot: str, path: str) -> None:
    """Write one file of a snapshot to standard output."""
    if sys.stdout.isatty():
        raise UsageError("refusing to write file contents to a terminal",
                         hint="redirect the output: safehold dump SNAP FILE > out")  # fmt: skip
    repo = state.open()
    with repo.locked(exclusive=False):
        chosen = repo.find_snapshot(snapshot)
        dump_file(repo, chosen, path, sys.stdout.buffer)
    sys.stdout.buffer.flush()


@dataclass(frozen=True)
class FileChoices:
    only_missing: bool = False
    changed: str | None = None
    overwrite_newer: bool = False


def _plan_restore(
    state: CliState,
    ref: str,
    source_name: str | None,
    into: str,
    to_production: bool,
    yes: bool,
    as_json: bool,
    reason: str | None = None,
    dry_run: bool = False,
    identity: str | None = None,
    accounts: AccountOptions = KEEP_ACCOUNTS,
    choices: FileChoices = FileChoices(),
) -> int:
    from safehold.app.restore import execute_restore, plan_source_restore

    # one source needs only its own ${VAR}s: on a new machine the app's variables may still be
    # inside the secrets backup this very command restores
    plan = state.plan([source_name] if source_name else None)
    redact = plan.redactor()
    repo = state.open(plan)
    restore_plan = plan_source_restore(
        repo, plan, ref, into, source_name=source_name, to_production=to_production, yes=yes,
        reason=reason, identity=Path(identity) if identity else None, environ=state.environ(),
        accounts=accounts, only_missing=choices.only_missing, changed=choices.changed,
        overwrite_newer=choices.overwrite_newer,
    )  # fmt: skip
    snapshot = restore_plan.snapshot
    source = restore_plan.source
    assert source is not None
    if dry_run:
        return _show_restore_plan(state, restore_plan, as_json, redact)

    evidence_taken: list[Snapshot] = []

    def say_evidence(evidence: Snapshot) -> None:
        evidence_taken.append(evidence)
        if not as_json:  # stdout carries only JSON lines then
            state.say(f"evidence snapshot {evidence.short_id} saved as {evidence.name}")
        state.incident_notes.append(f"evidence snapshot {evidence.name}")

    for table in restore_plan.row_losses if restore_plan.allowed else ():
        state.warn(f"{table.label}: {table.delta} row(s) written since the backup are replaced")

    with restore_progress(state, as_json) as progress:
        report = execute_restore(
            repo, restore_plan, redact=redact, on_evidence=say_evidence, progress=progress
        )
    if as_json:
        state.emit_summary(
            {
                "snapshot_id": snapshot.id,
                "source": report.source,
                "target": redact(report.target),
                "seconds": round(report.seconds, 3),
                "summary": [redact(line) for line in report.summary],
                "details": report.details,
                "warnings": [redact(w) for w in report.warnings],
                "evidence": [{"snapshot_id": e.id, "name": e.name} for e in evidence_taken],
            }
        )
    else:
        label = snapshot.name or snapshot.short_id
        state.say(f"restored {source.name} ({source.kind}) from {label} "
                  f"into {redact(report.target)} in {report.seconds:.1f} s")  # fmt: skip
        for line in report.summary:
            state.say(f"  {redact(line)}")
    label = snapshot.name or snapshot.short_id
    state.incident_notes.append(
        f"restored {source.name} from {label} into "
        f"{redact(report.target)}: " + "; ".join(report.summary)
    )
    for warning in report.warnings:
        state.warn(redact(warning))
    return ExitCode.PARTIAL if report.warnings else ExitCode.OK


def _table_restore(
    state: CliState, ref: str, source_name: str | None, into: str, tables: tuple[str, ...],
    to_production: bool, yes: bool, reason: str | None, dry_run: bool, as_json: bool,
) -> int:  # fmt: skip
    from safehold.app.table_restore import execute_table_restore, plan_table_restore

    plan = state.plan([source_name] if source_name else None)
    redact = plan.redactor()
    repo = state.open(plan)
    table_plan = plan_table_restore(
        repo,
        plan,
        ref,
        into,
        source_name=source_name,
        tables=tables,
        to_production=to_production,
        yes=yes,
        reason=reason,
        environ=state.environ(),
    )
    if dry_run:
        refusal = table_plan.refusal
        if as_json:
            state.emit_json(
                {
                    "dry_run": True,
                    "allowed": table_plan.allowed,
                    "snapshot": {
                        "id": table_plan.snapshot_id,
                        "name": table_plan.snapshot_name,
                        "time": table_plan.snapshot_time,
                    },
                    "source": {"name": table_plan.source_name, "type": table_plan.kind},
                    "tables": list(table_plan.tables),
                    "target": redact(table_plan.target),
                    "production": table_plan.production,
                    "refusal": None
                    if refusal is None
                    else {"message": redact(refusal.message), "hint": redact(refusal.hint)},
                }
            )
        else:
            state.say(
                f"restore plan: table(s) {', '.join(table_plan.tables)} of source "
                f"{table_plan.source_name} ({table_plan.kind}) from snapshot "
                f"{table_plan.snapshot_id[:8]} {table_plan.snapshot_name or ''}"
            )
            state.say(
                f"  into {redact(table_plan.target)}"
                + (" (the source's PRODUCTION location)" if table_plan.production else "")
            )
            state.say(
                "  via a scratch copy of the snapshot; a table the target already has is refused"
            )
            if refusal is not None:
                state.say(f"  REFUSED: {redact(refusal.message)}")
                state.say(f"  hint: {redact(refusal.hint)}")
            state.say(
                "dry run: nothing was restored" + ("" if table_plan.allowed else " (refused)")
            )
        return ExitCode.OK if refusal is None else refusal.exit_code

    def say_evidence(evidence: Snapshot) -> None:
        state.incident_notes.append(f"evidence snapshot {evidence.name}")
        if not as_json:
            state.say(f"evidence snapshot {evidence.short_id} saved as {evidence.name}")

    progress = (
        None
        if as_json or state.quiet
        else (lambda text: state.err.print(redact(text), markup=False))
    )
    report = execute_table_restore(
        repo, table_plan, progress=progress, redact=redact, on_evidence=say_evidence
    )
    if as_json:
        state.emit_json(
            {
                "snapshot_id": table_plan.snapshot_id,
                "source": report.source,
                "target": redact(report.target),
                "seconds": round(report.seconds, 3),
                "tables": report.details.get("tables", {}),
                "verified": report.details.get("verified"),
                "warnings": [redact(w) for w in report.warnings],
            }
        )
    else:
        state.say(
            f"restored table(s) {', '.join(report.details.get('tables', {}))} of "
            f"{report.source} into {redact(report.target)} in {report.seconds:.1f} s"
        )
        for line in report.summary:
            state.say(f"  {redact(line)}")
    state.incident_notes.append(
        f"restored table(s) {', '.join(report.details.get('tables', {}))} of {report.source} "
        f"into {redact(report.target)}"
    )
    for warning in report.warnings:
        state.warn(redact(warning))
    return ExitCode.PARTIAL if report.warnings else ExitCode.OK


def _show_restore_plan(
    state: CliState, plan: RestorePlan, as_json: bool, redact: Redact = lambda text: text
) -> int:
    """`restore --dry-run`: the plan on stdout; exit as the real command would start."""
    if as_json:
        state.emit_json(restore_plan_json(plan, redact))
    else:
        for line in restore_plan_lines(plan, redact):
            state.say(line)
    return ExitCode.OK if plan.refusal is None else plan.refusal.exit_code


def restore_plan_json(plan: RestorePlan, redact: Redact) -> dict[str, object]:
    source = evidence = refusal = None
    if plan.source_name is not None:
        source = {"name": plan.source_name, "type": plan.source_type}
    if plan.evidence is not None:
        evidence = {"source": plan.evidence.source, "name": plan.evidence.name}
    if plan.refusal is not None:
        refusal = {
            "message": redact(plan.refusal.message),
            "hint": redact(plan.refusal.hint),
            "exit_code": plan.refusal.exit_code,
        }
    items = [
        {
            "path": i.path,
            "type": i.type,
            "files": i.files,
            "bytes": i.bytes,
            "blobs": i.blobs,
            "unreadable_trees": i.unreadable_trees,
        }
        for i in plan.items
    ]
    snapshot = {"id": plan.snapshot_id, "name": plan.snapshot_name, "time": plan.snapshot_time}
    return {
        "dry_run": True,
        "allowed": plan.allowed,
        "snapshot": snapshot,
        "source": source,
        "target": redact(plan.target),
        "production": plan.production,
        "evidence": evidence,
        "includes": list(plan.includes),
        "force": plan.force,
        "roles": plan.accounts.roles,
        "owners": plan.accounts.owners,
        "items": items,
        "only_missing": plan.only_missing,
        "changed": plan.changed,
        "overwrite_newer": plan.overwrite_newer,
        "decisions": [d.to_json() for d in plan.decisions if d.action != "skip"],
        "decision_counts": {
            "restore": plan.files_where("restore"),
            "keep": plan.files_where("keep"),
            "unchanged": plan.files_where("skip"),
            "replace": plan.replaces,
            "newer_kept": plan.files_where("keep", "changed", newer=True),
            "newer_replaced": plan.files_where("restore", "changed", newer=True),
        },
        "row_losses": [t.to_json() for t in plan.row_losses],
        "loss_note": plan.loss_note or None,
        "total_files": plan.total_files,
        "total_bytes": plan.total_bytes,
        "total_blobs": plan.total_blobs,
        "refusal": refusal,
    }


def restore_plan_lines(plan: RestorePlan, redact: Redact) -> list[str]:
    when = re.sub(r"\.\d+", "", plan.snapshot_time)  # whole seconds
    what = f"source {plan.source_name} ({plan.source_type})" if plan.source_name else "files"
    lines = [
        f"restore plan: {what} from snapshot {plan.snapshot_id[:8]} "
        f"{plan.snapshot_name or ''} ({when})".replace("  ", " "),
        f"  into {redact(plan.target)}"
        + (" (the source's PRODUCTION location)" if plan.production else ""),
    ]
    if plan.includes:
        lines.append(f"  only: {', '.join(plan.includes)}")
    if plan.source_type in ("postgres", "mysql"):
        roles = "created when missing" if plan.accounts.roles else "not created (--no-roles)"
        owners = "kept" if plan.accounts.owners else "the restoring user (--no-owner)"
        lines.append(f"  roles/users of the backup: {roles}; owners: {owners}")
    for item in plan.items:
        damaged = f", {item.unreadable_trees} unreadable folder(s)" if item.unreadable_trees else ""
        lines.append(f"  fetch {item.path} ({item.type}): {item.files:,} file(s), "
                     f"{human_bytes(item.bytes)}, {item.blobs:,} blob(s){damaged}")  # fmt: skip
    lines.append(f"  total: {plan.total_files:,} file(s), {human_bytes(plan.total_bytes)}, "
                 f"{plan.total_blobs:,} blob(s)")  # fmt: skip
    if plan.decisions or plan.only is not None:
        lines.extend(f"  {line}" for line in decision_summary(plan))
        shown = [d for d in plan.decisions if d.action != "skip"]
        for decision in shown[:_SHOWN]:
            newer = ", newer" if decision.newer else ""
            count = f" ({decision.files} files)" if decision.files > 1 else ""
            lines.append(f"    {decision.action:<7} {decision.path}{count} [{decision.status}"
                         f"{newer}]: {decision.why}")  # fmt: skip
        if len(shown) > _SHOWN:
            lines.append(f"    ... and {len(shown) - _SHOWN} more (--json lists all)")
    for table in plan.row_losses:
        lines.append(
            f"  LOSES {table.label}: {table.live_rows:,} rows now, {table.backup_rows:,} "
            f"in the backup: {table.delta:,} row(s) written since would be lost"
        )
    if plan.loss_note:
        lines.append(f"  {redact(plan.loss_note)}")
    if plan.evidence is not None:
        lines.append(f"  first: evidence snapshot of {plan.evidence.source} "
                     f"as {plan.evidence.name}")  # fmt: skip
    if plan.refusal is not None:
        lines.append(f"  REFUSED: {redact(plan.refusal.message)}")
        if plan.refusal.hint:
            lines.append(f"  hint: {redact(plan.refusal.hint)}")
    lines.append("dry run: nothing was restored" + ("" if plan.allowed else " (refused)"))
    return lines


COMMANDS = [restore, dump]
