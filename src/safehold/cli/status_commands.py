"""`safehold status`: the "are you actually protected?" scorecard."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from safehold.cli.context import CliState, pass_state
from safehold.health.scorecard import Level, worst

_MARKS = {Level.PASS: "PASS", Level.WARN: "WARN", Level.FAIL: "FAIL"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the scorecard as JSON.")
@pass_state
def status(state: CliState, as_json: bool) -> int:
    """Are you actually protected? One line per item, PASS/WARN/FAIL with the fix.

    Exit code 0 when everything passes, 1 when something warns, 2 when something fails,
    so cron or CI can act on it."""
    from safehold.app.opener import open_destination
    from safehold.health.status import scorecard

    plan = state.require_plan("status")
    items = scorecard(
        plan,
        lambda d: open_destination(plan, d.name, state.environ()),
        datetime.now(UTC),
        state.environ(),
    )
    overall = worst(items)
    if as_json:
        state.emit_json(
            {
                "app": plan.app,
                "env": plan.env,
                "result": overall.value,
                "items": [item.to_json() for item in items],
            }
        )
        return overall.exit_code
    for item in items:
        state.say(f"{_MARKS[item.level]}  {item.title}: {item.detail}")
        if item.fix:
            state.say(f"      fix: {item.fix}")
    counts = {level: sum(1 for i in items if i.level is level) for level in Level}
    verdict = {Level.PASS: "protected", Level.WARN: "mostly protected",
               Level.FAIL: "NOT protected"}[overall]  # fmt: skip
    state.say(
        f"\n{plan.name_prefix}: {verdict} ({counts[Level.PASS]} pass, {counts[Level.WARN]} warn, "
        f"{counts[Level.FAIL]} fail)"
    )
    return overall.exit_code


COMMANDS: list[click.Command] = [status]
