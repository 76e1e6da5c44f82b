"""Commands that look: snapshots, ls, diff."""

from __future__ import annotations

import click

from safehold.app.inspect import (
    diff_snapshots,
    filter_snapshots,
    list_files,
    node_json,
    snapshot_json,
)
from safehold.cli.context import CliState, pass_state
from safehold.repo.gotypes import format_time, go_quote


def printable(path: str) -> str:
    """A path safe to print on one line: control characters and bad bytes escaped."""
    if path.isprintable():
        return path
    return go_quote(path.encode("utf-8", "surrogateescape"))


@click.command()
@click.option("--reason", help="Only snapshots taken for this reason.")
@click.option("--tag", "tags", multiple=True, help="Only snapshots with this tag.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def snapshots(state: CliState, reason: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """List snapshots, oldest first."""
    repo = state.open()
    listing = filter_snapshots(repo.list_snapshots(), reason, list(tags))
    holders: dict[str, list[str]] = {}
    if not state.explicit_repository() and state.has_plan():
        from safehold.app.destinations import copy_holders

        plan = state.plan()
        if len(plan.destinations) > 1:
            found, unreachable = copy_holders(plan, listing)
            first = plan.destinations[0].name
            holders = {snapshot_id: [first, *names] for snapshot_id, names in found.items()}
            for name in unreachable:
                state.warn(f"destination {name} could not be read: its copies are not shown")
    if as_json:
        state.emit_json(
            [
                {**snapshot_json(s), **({"destinations": holders[s.id]} if holders else {})}
                for s in listing
            ]
        )
        return
    if not listing:
        state.say("no snapshots")
        return
    state.say(f"{'ID':<9} {'Time':<19}  {'Name':<40} {'Paths'}")
    for snap in listing:
        when = format_time(snap.time)[:19].replace("T", " ")
        flag = "" if snap.complete else "  [INCOMPLETE]"
        copies = f"  [{', '.join(holders[snap.id])}]" if holders else ""
        state.say(
            f"{snap.short_id:<9} {when:<19}  {snap.name or '-':<40} {', '.join(snap.paths)}"
            f"{copies}{flag}"
        )
    state.say(f"{len(listing)} snapshot(s)")


@click.command()
@click.argument("snapshot")
@click.argument("path", required=False)
@click.option("-l", "--long", "long_format", is_flag=True, help="Show mode, size and time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one array).")
@pass_state
def ls(state: CliState, snapshot: str, path: str | None, long_format: bool, as_json: bool) -> None:
    """List the files of a snapshot (under PATH)."""
    repo = state.open()
    chosen = repo.find_snapshot(snapshot)
    entries = list_files(repo, chosen, path)
    if as_json:
        state.emit_json([node_json(p, n) for p, n in entries])
        return
    for entry_path, node in entries:
        if long_format:
            when = format_time(node.mtime)[:19].replace("T", " ")
            state.say(f"{node.type:<8} {node.mode & 0o7777:04o} {node.size:>12} {when}  "
                      f"{printable(entry_path)}")  # fmt: skip
        else:
            state.say(printable(entry_path))


@click.command()
@click.argument("first")
@click.argument("second")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def diff(state: CliState, first: str, second: str, as_json: bool) -> None:
    """Show what changed between two snapshots (+ added, - removed, M modified)."""
    repo = state.open()
    listing = repo.list_snapshots()
    left = repo.find_snapshot(first, listing)
    right = repo.find_snapshot(second, listing)
    result = diff_snapshots(repo, left, right)
    if as_json:
        state.emit_json(
            {
                "from": left.id,
                "to": right.id,
                "changes": [{"change": e.change, "path": e.path} for e in result.entries],
                "added": result.added,
                "removed": result.removed,
                "modified": result.modified,
            }
        )
        return
    for entry in result.entries:
        state.say(f"{entry.change}    {printable(entry.path)}")
    state.say(f"added: {result.added}, removed: {result.removed}, modified: {result.modified}")


COMMANDS = [snapshots, ls, diff]
