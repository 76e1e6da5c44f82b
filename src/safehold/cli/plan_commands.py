"""`safehold plan check`: validate the plan file and explain what it will do."""

from __future__ import annotations

import click

from safehold.cli.context import CliState, pass_state
from safehold.plan.describe import describe_plan


@click.group()
def plan() -> None:
    """Work with the plan file (safehold.toml)."""


@plan.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (no secrets).")
@pass_state
def plan_check(state: CliState, as_json: bool) -> None:
    """Validate the plan and say, in plain words, what it backs up and where."""
    loaded = state.plan()
    if as_json:
        state.emit_json(
            {
                "file": str(loaded.file),
                "app": loaded.app,
                "env": loaded.env,
                "rpo_seconds": loaded.targets.rpo.total_seconds(),
                "rto_seconds": loaded.targets.rto.total_seconds(),
                "sources": [
                    {"name": s.name, "type": s.type, "location": s.location(), "owner": s.owner}
                    for s in loaded.sources
                ],
                "destinations": [
                    {
                        "name": d.name,
                        "repository": str(d.repository),
                        "password": d.password_source(),
                    }
                    for d in loaded.destinations
                ],
            }
        )
        return
    for line in describe_plan(loaded):
        state.say(line)
    state.say(f"plan OK: {loaded.file}")


COMMANDS = [plan]
