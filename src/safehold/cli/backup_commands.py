"""The command that stores data: backup (files and folders, or a plan's sources).

restore and dump are cli/restore_commands.py: a backup does not import the restore path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from safehold.app.backup import BackupRequest, run_backup
from safehold.app.inspect import human_bytes
from safehold.cli.alerting import alerts_on_failure
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import backup_progress
from safehold.errors import ExitCode, SafeholdError, UsageError
from safehold.fs.archiver import BackupOptions, target_paths
from safehold.fs.statahead import StatsAhead, collect
from safehold.policy.retention import REASONS
from safehold.repo.clock import local_now
from safehold.repo.kdf import early_pending
from safehold.repo.snapshot import Snapshot

if TYPE_CHECKING:  # the plan package (pydantic) loads only when a plan is used
    from safehold.plan.models import Plan

_COMPRESSION = {"auto": 3, "off": None, "fast": 1, "max": 19}


@click.command()
@click.argument("paths", nargs=-1)
@click.option("--source", "only_sources", multiple=True,
              help="With a plan: back up only this source (repeatable).")  # fmt: skip
@click.option("--tag", "tags", multiple=True, help="Tag the snapshot (repeatable).")
@click.option("--reason", default="manual", show_default=True, metavar="REASON",
              help=f"Why it is taken: any lowercase word ({', '.join(REASONS)}, ...).")  # fmt: skip
@click.option("--note", help="A short note added to the snapshot name.")
@click.option("-e", "--exclude", "excludes", multiple=True, help="Exclude a pattern.")
@click.option("--parent", help="Compare with this snapshot instead of the latest of the paths.")
@click.option("--force", is_flag=True, help="Read every file, ignoring the parent snapshot.")
@click.option("--compression", type=click.Choice(list(_COMPRESSION)), default="auto",
              show_default=True)  # fmt: skip
@click.option("--index-interval", type=click.FloatRange(min=0, min_open=True), default=300,
              show_default=True, envvar="SAFEHOLD_INDEX_INTERVAL", metavar="SECONDS",
              help="Also write the index this often while a long backup stores data, so a "
              "killed backup keeps its work (env SAFEHOLD_INDEX_INTERVAL).")  # fmt: skip
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Stream JSON lines: status every --progress-interval, then the summary.",
)
@pass_state
@alerts_on_failure("backup")
def backup(
    state: CliState,
    paths: tuple[str, ...],
    only_sources: tuple[str, ...],
    tags: tuple[str, ...],
    reason: str,
    note: str | None,
    excludes: tuple[str, ...],
    parent: str | None,
    force: bool,
    compression: str,
    index_interval: float,
    as_json: bool,
) -> int:
    """Back up the plan's sources (no PATH), or files and folders, into one new snapshot.

    Ctrl-C or SIGTERM stores and indexes the data in flight before it exits (130), so the
    next backup uploads only what is missing."""
    options = BackupOptions(
        excludes=list(excludes), compression_level=_COMPRESSION[compression], read_all=force,
        index_interval=index_interval,
    )  # fmt: skip
    if not paths:
        if not state.has_plan():
            raise UsageError(
                "nothing to back up: no PATH given and no plan file found",
                hint="name folders to back up, or write a plan with `safehold init`",
            )
        return _plan_backup(state, list(only_sources), reason, note, options, as_json)
    if only_sources:
        raise UsageError("--source works with a plan, not with PATHs")
    options.stats_ahead = _stats_ahead(list(paths), options.excludes)
    repo = state.open()
    request = BackupRequest(list(paths), list(tags), reason, note, parent=parent, options=options)
    with backup_progress(state, as_json) as progress:
        result = run_backup(repo, request, progress)
    stats, snapshot = result.stats, result.snapshot
    for path, message in stats.errors:
        click.echo(f"error: {path}: {message}", err=True)
    if as_json:
        state.emit_summary(
            {
                "snapshot_id": snapshot.id,
                "name": snapshot.name,
                "complete": snapshot.complete,
                "files_new": stats.files_new,
                "files_changed": stats.files_changed,
                "files_unmodified": stats.files_unmodified,
                "dirs": stats.dirs,
                "bytes_total": stats.bytes_total,
                "bytes_read": stats.bytes_read,
                "bytes_added": stats.bytes_added,
                "bytes_stored": stats.bytes_stored,
                "errors": [{"path": p, "message": m} for p, m in stats.errors],
                **_restic_summary_fields(snapshot, stats.bytes_total, stats.bytes_stored),
                "total_files_processed": (
                    stats.files_new + stats.files_changed + stats.files_unmodified
                ),
                "object_lock": result.locks.to_json() if result.locks else None,
            }
        )
    else:
        state.say(
            f"files: {stats.files_new} new, {stats.files_changed} changed, "
            f"{stats.files_unmodified} unmodified"
        )
        state.say(
            f"added to the repository: {human_bytes(stats.bytes_added)} "
            f"({human_bytes(stats.bytes_stored)} stored)"
        )
        state.say(f"snapshot {snapshot.short_id} saved as {snapshot.name}")
        if result.locks:
            state.say(result.locks.summary())
    if stats.errors:
        click.echo(
            f"warning: {len(stats.errors)} file(s) could not be read; the snapshot is marked "
            "incomplete",
            err=True,
        )
        return ExitCode.PARTIAL
    return ExitCode.OK


def _stats_ahead(paths: list[str], excludes: list[str]) -> StatsAhead | None:
    """While the key is still being derived (cli/early_key.py), stat what the walk will
    visit (fs/statahead.py); None when there is no such wait."""
    if not early_pending():
        return None
    try:
        real_paths = target_paths(paths)
    except SafeholdError:
        return None  # the backup itself says what is wrong with the paths
    return collect(real_paths, excludes, local_now().offset, until=lambda: not early_pending())


def _plan_backup(
    state: CliState,
    only_sources: list[str],
    reason: str,
    note: str | None,
    options: BackupOptions,
    as_json: bool,
) -> int:
    from safehold.app.plan_backup import backup_plan

    plan = state.plan()
    repo = state.open()
    with backup_progress(state, as_json) as progress:
        result = backup_plan(
            repo, plan, reason=reason, note=note, only_sources=only_sources or None,
            options=options, progress=progress,
        )  # fmt: skip
    snapshot = result.snapshot
    stats = result.stats
    if as_json:
        state.emit_summary(
            {
                "snapshot_id": snapshot.id,
                "name": snapshot.name,
                "complete": snapshot.complete,
                "sources": [
                    {"name": o.name, "type": o.kind, "ok": o.ok, "error": o.error,
                     "files": o.files, "bytes": o.bytes}
                    for o in result.outcomes
                ],
                "bytes_added": stats.bytes_added,
                "bytes_stored": stats.bytes_stored,
                "files_new": stats.files_new,
                "files_changed": stats.files_changed,
                "files_unmodified": stats.files_unmodified,
                **_restic_summary_fields(snapshot, stats.bytes_total, stats.bytes_stored),
                "object_lock": result.locks.to_json() if result.locks else None,
            }
        )  # fmt: skip
    else:
        for outcome in result.outcomes:
            if outcome.ok:
                state.say(f"  ok      {outcome.name} ({outcome.kind}): {outcome.files} file(s), "
                          f"{human_bytes(outcome.bytes)}")  # fmt: skip
            else:
                state.say(f"  FAILED  {outcome.name} ({outcome.kind}): {outcome.error}")
        state.say(
            f"added to the repository: {human_bytes(result.stats.bytes_added)} "
            f"({human_bytes(result.stats.bytes_stored)} stored)"
        )
        state.say(f"snapshot {snapshot.short_id} saved as {snapshot.name}")
        if result.locks:
            state.say(result.locks.summary())
    copy_after_plan_backup(state, plan, as_json)
    for outcome in result.failed:
        click.echo(f"error: source {outcome.name} failed: {outcome.error}", err=True)
        state.failure_details.append(f"source {outcome.name} failed: {outcome.error}")
    if result.failed:
        click.echo(
            "error: the snapshot is INCOMPLETE: the other sources were saved; fix the failed "
            "source(s) and run the backup again",
            err=True,
        )
        return ExitCode.PARTIAL
    return ExitCode.OK


def _restic_summary_fields(snapshot: Snapshot, total: int, stored: int) -> dict[str, object]:
    """The fields of restic's backup summary that safehold's summary has as well."""
    seconds = (snapshot.safehold.get("summary") or {}).get("seconds")
    return {"data_added": stored, "total_bytes_processed": total, "total_duration": seconds}


def copy_after_plan_backup(state: CliState, plan: Plan, as_json: bool) -> None:
    """Bring every destination marked copy_after_backup in step with the first one."""
    from safehold.app.destinations import copy_after_backup

    for destination, result in copy_after_backup(plan, state.environ()):
        if not as_json:
            state.say(f"copied {len(result.copied)} snapshot(s) to {destination.name} "
                      f"({destination.location()})")  # fmt: skip
            if result.locks:
                state.say(f"  {destination.name}: {result.locks.summary()}")


COMMANDS = [backup]
