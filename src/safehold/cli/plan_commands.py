"""`safehold plan check`: validate the plan file and explain what it will do."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode
from safehold.plan.describe import describe_plan
from safehold.plan.logins import describe_login

if TYPE_CHECKING:
    from safehold.app.plan_check import Finding
    from safehold.plan.models import Plan


@click.group()
def plan() -> None:
    """Work with the plan file (safehold.toml)."""


@plan.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (no secrets).")
@click.option(
    "--connect",
    is_flag=True,
    help="Also try every source and destination: paths, databases, tools, repositories.",
)
@pass_state
def plan_check(state: CliState, as_json: bool, connect: bool) -> None:
    """Validate the plan and say, in plain words, what it backs up and where; refuse what is
    visibly wrong (missing paths, unknown alert URLs, credentials in URLs). Exit 1 if any."""
    from safehold.app.plan_check import check_plan

    loaded = state.plan()
    findings = check_plan(loaded, state.environ(), connect=connect)
    failed = [finding for finding in findings if finding.failed]
    if as_json and connect:
        state.emit_json([finding.as_dict() for finding in findings])
    elif as_json:
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
                        "login": describe_login(loaded, d, state.environ()),
                    }
                    for d in loaded.destinations
                ],
                "problems": [finding.as_dict() for finding in findings],
            }
        )
    else:
        _print(state, loaded, findings, connect)
    if failed:
        raise SystemExit(ExitCode.ERROR)


def _print(state: CliState, loaded: Plan, findings: list[Finding], connect: bool) -> None:
    if not connect:
        for line in describe_plan(loaded, state.environ()):
            state.say(line)
    for finding in findings:
        state.say(finding.line())
    failed = sum(finding.failed for finding in findings)
    if failed:
        state.say(f"plan NOT OK: {failed} problem(s) in {loaded.file}")
    else:
        state.say(f"plan OK: {loaded.file}")


COMMANDS = [plan]
