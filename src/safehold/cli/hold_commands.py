"""Holds: hold, unhold, holds (app/holds.py)."""

from __future__ import annotations

import click

from safehold.app.holds import hold_snapshot, list_holds, release_snapshot
from safehold.cli.context import CliState, pass_state


@click.command()
@click.argument("snapshot")
@click.option("--why", required=True, help="What the snapshot is kept for (e.g. incident 42).")
@click.option("--json", "as_json", is_flag=True, help="Print the hold as JSON.")
@pass_state
def hold(state: CliState, snapshot: str, why: str, as_json: bool) -> None:
    """Keep SNAPSHOT (an id, an id prefix or a name) until `unhold`: forget never removes it."""
    repo = state.open()
    chosen = repo.find_snapshot(snapshot)
    made = hold_snapshot(repo, chosen, why)
    if as_json:
        state.emit_json(made.to_json())
    else:
        state.say(f"held {chosen.short_id} {chosen.name or ''}: {made.why}".replace("  ", " "))


@click.command()
@click.argument("snapshot")
@click.option("--json", "as_json", is_flag=True, help="Print the holds ended as JSON.")
@pass_state
def unhold(state: CliState, snapshot: str, as_json: bool) -> None:
    """End every hold on SNAPSHOT (a release record is written; the hold stays in history)."""
    repo = state.open()
    chosen = repo.find_snapshot(snapshot)
    ended = release_snapshot(repo, chosen)
    if as_json:
        state.emit_json([hold.to_json() for hold in ended])
    else:
        whys = "; ".join(hold.why for hold in ended)
        state.say(f"released {chosen.short_id} ({whys}); forget may now remove it")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the holds as JSON.")
@pass_state
def holds(state: CliState, as_json: bool) -> None:
    """List the held snapshots: id, name, when, who, why."""
    repo = state.open()
    current = list_holds(repo)
    names = {snapshot.id: snapshot.name for snapshot in repo.list_snapshots()}
    if as_json:
        state.emit_json([{**hold.to_json(), "name": names.get(hold.snapshot)} for hold in current])
        return
    if not current:
        state.say("no snapshot is held")
    for item in current:
        name = names.get(item.snapshot) or "(snapshot gone)"
        state.say(f"{item.snapshot[:8]} {name} {item.when} {item.who}  {item.why}")


COMMANDS = [hold, unhold, holds]
