"""Commands that move data: backup, restore, dump."""

from __future__ import annotations

import sys

import click

from safehold.app.backup import REASONS, BackupRequest, run_backup
from safehold.app.inspect import dump_file, human_bytes
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import backup_progress, restore_progress
from safehold.errors import ExitCode, UsageError
from safehold.fs.archiver import BackupOptions
from safehold.fs.restorer import RestoreOptions, Restorer

_COMPRESSION = {"auto": 3, "off": None, "fast": 1, "max": 19}


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--tag", "tags", multiple=True, help="Tag the snapshot (repeatable).")
@click.option("--reason", type=click.Choice(REASONS), default="manual", show_default=True)
@click.option("--note", help="A short note added to the snapshot name.")
@click.option("-e", "--exclude", "excludes", multiple=True, help="Exclude a pattern.")
@click.option("--parent", help="Compare with this snapshot instead of the latest of the paths.")
@click.option("--force", is_flag=True, help="Read every file, ignoring the parent snapshot.")
@click.option("--compression", type=click.Choice(list(_COMPRESSION)), default="auto",
              show_default=True)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_state
def backup(
    state: CliState,
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    reason: str,
    note: str | None,
    excludes: tuple[str, ...],
    parent: str | None,
    force: bool,
    compression: str,
    as_json: bool,
) -> int:
    """Back up files and folders into one new snapshot."""
    repo = state.open()
    options = BackupOptions(
        excludes=list(excludes), compression_level=_COMPRESSION[compression], read_all=force
    )
    request = BackupRequest(list(paths), list(tags), reason, note, parent=parent, options=options)
    with backup_progress(state) as progress:
        result = run_backup(repo, request, progress)  # type: ignore[arg-type]
    stats, snapshot = result.stats, result.snapshot
    for path, message in stats.errors:
        click.echo(f"error: {path}: {message}", err=True)
    if as_json:
        state.emit_json(
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
    if stats.errors:
        click.echo(
            f"warning: {len(stats.errors)} file(s) could not be read; the snapshot is marked "
            "incomplete",
            err=True,
        )
        return ExitCode.PARTIAL
    return ExitCode.OK


@click.command()
@click.argument("snapshot")
@click.option("-t", "--target", required=True, help="Directory to restore into (new or empty).")
@click.option("-i", "--include", "includes", multiple=True,
              help="Restore only this path of the snapshot (repeatable).")  # fmt: skip
@click.option("--force", is_flag=True, help="Write into a non-empty target directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_state
def restore(
    state: CliState,
    snapshot: str,
    target: str,
    includes: tuple[str, ...],
    force: bool,
    as_json: bool,
) -> int:
    """Restore a snapshot into a new place, bit-exact with metadata."""
    repo = state.open()
    with repo.locked(exclusive=False):
        chosen = repo.find_snapshot(snapshot)
        options = RestoreOptions(includes=list(includes), force=force)
        with restore_progress(state) as progress:
            stats = Restorer(repo, options, progress).restore(chosen, target)  # type: ignore[arg-type]
    for path, message in stats.errors:
        click.echo(f"error: {path}: {message}", err=True)
    for path, message in stats.warnings[:20]:
        state.warn(f"{path}: {message}")
    if as_json:
        state.emit_json(
            {
                "snapshot_id": chosen.id,
                "target": target,
                "files": stats.files,
                "dirs": stats.dirs,
                "bytes_written": stats.bytes_written,
                "errors": [{"path": p, "message": m} for p, m in stats.errors],
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


COMMANDS = [backup, restore, dump]
