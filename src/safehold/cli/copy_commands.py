"""`safehold copy`: snapshots from another repository into this one, as `restic copy`."""

from __future__ import annotations

import click

from safehold.app.copy import CopyResult, copy_snapshots
from safehold.app.opener import COPY_SOURCE, RepositoryRequest, open_destination
from safehold.cli.alerting import alerts_on_failure
from safehold.cli.context import CliState, pass_state
from safehold.cli.progress import step_progress
from safehold.errors import UsageError
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository

_MIB = 1024 * 1024


def _mib(amount: int) -> str:
    return f"{amount / _MIB:.1f} MiB"


@click.command("copy")
@click.argument("snapshots", nargs=-1)
@click.option("--from-repo", "from_repo", metavar="LOCATION",
              help="The repository to copy from (or SAFEHOLD_FROM_REPOSITORY).")  # fmt: skip
@click.option("--from-password-file", help="Read the source repository's password from this file.")
@click.option("--from-password-command", help="Run this command to get the source's password.")
@click.option("--to", "to_names", multiple=True,
              help="With a plan: copy the first destination into this one (repeatable; "
              "default: every other destination).")  # fmt: skip
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be copied; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
@alerts_on_failure("copy")
def copy_command(
    state: CliState,
    snapshots: tuple[str, ...],
    to_names: tuple[str, ...],
    from_repo: str | None,
    from_password_file: str | None,
    from_password_command: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Copy snapshots (all, or the named ones) from --from-repo into this repository.

    Snapshots the target already has (copied before) are skipped; only blobs the target lacks
    are copied, re-encrypted with the target's key. The source password comes from
    --from-password-file, --from-password-command, SAFEHOLD_FROM_PASSWORD,
    SAFEHOLD_FROM_PASSWORD_FILE or SAFEHOLD_FROM_PASSWORD_COMMAND.

    With a plan and no --from-repo: copies the plan's first destination into the others
    (--to NAME), each opened with its own password and credentials.
    """
    environ = state.environ()
    if from_repo is None and not environ.get(COPY_SOURCE.location_variable) and state.has_plan():
        for source, target in plan_copy_pairs(state, list(to_names)):
            _copy_and_report(state, source, target, snapshots, dry_run, as_json)
        return
    if to_names:
        raise UsageError("--to names plan destinations; use -r and --from-repo without a plan")
    target = state.open()
    source = state.open_request(
        RepositoryRequest(from_repo, from_password_file, from_password_command, COPY_SOURCE)
    )
    _copy_and_report(state, source, target, snapshots, dry_run, as_json)


def plan_copy_pairs(state: CliState, to_names: list[str]) -> list[tuple[Repository, Repository]]:
    """(first destination, other destination) pairs of the plan, opened and ready."""
    plan = state.plan()
    first = plan.destinations[0]
    names = to_names or [d.name for d in plan.destinations[1:]]
    if not names:
        raise UsageError(
            "the plan has one destination: nothing to copy to",
            hint="add a second [[destinations]] table (an offsite s3 or sftp one)",
        )
    if first.name in names:
        raise UsageError(f"destination {first.name} is the one copies are made from")
    environ = state.environ()
    source = open_destination(plan, first.name, environ)
    return [(source, open_destination(plan, name, environ)) for name in names]


def _copy_and_report(
    state: CliState,
    source: Repository,
    target: Repository,
    snapshots: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    with step_progress(state) as progress:
        result = copy_snapshots(
            source,
            target,
            list(snapshots),
            dry_run=dry_run,
            progress=progress,
        )
    if as_json:
        state.emit_json(_as_json(result, source.backend.location, target.backend.location))
        return
    if not result.same_chunker:
        state.warn(
            "the repositories use different chunker parameters: new backups to the target will "
            "not deduplicate against the copied data"
        )
    for skipped in result.skipped:
        state.say(
            f"skipping snapshot {skipped.source.short_id}: already in the target as "
            f"{skipped.target_id[:8]}"
        )
    for copied in result.copied:
        label = copied.source.name or format_time(copied.source.time)[:19]
        if copied.target_id is None:
            state.say(f"would copy snapshot {copied.source.short_id} {label}")
        else:
            state.say(f"copied snapshot {copied.source.short_id} {label} -> {copied.target_id[:8]}")
    verb = "would copy" if result.dry_run else "copied"
    state.say(
        f"{verb} {len(result.copied)} snapshot(s), {result.blobs} blobs "
        f"({_mib(result.bytes_copied)}), skipped {len(result.skipped)} already present"
    )
    if not result.dry_run and result.packs_written:
        state.say(
            f"wrote {result.packs_written} pack(s) ({_mib(result.bytes_stored)}), "
            f"verified {result.packs_verified}"
        )
    if result.locks:
        state.say(result.locks.summary())
    if result.dry_run:
        state.say("dry run: nothing was written")


def _as_json(result: CopyResult, source: str, target: str) -> dict[str, object]:
    return {
        "source": source,
        "target": target,
        "dry_run": result.dry_run,
        "object_lock": result.locks.to_json() if result.locks else None,
        "snapshots_copied": len(result.copied),
        "snapshots_skipped": len(result.skipped),
        "copied": [
            {
                "source_id": item.source.id,
                "target_id": item.target_id,
                "name": item.source.name,
                "time": format_time(item.source.time),
                "tree": item.source.tree,
            }
            for item in result.copied
        ],
        "skipped": [
            {"source_id": item.source.id, "target_id": item.target_id} for item in result.skipped
        ],
        "blobs_copied": result.blobs,
        "tree_blobs": result.tree_blobs,
        "data_blobs": result.data_blobs,
        "bytes_copied": result.bytes_copied,
        "bytes_stored": result.bytes_stored,
        "packs_written": result.packs_written,
        "packs_verified": result.packs_verified,
        "same_chunker_params": result.same_chunker,
    }


COMMANDS = [copy_command]
