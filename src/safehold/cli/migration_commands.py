"""migrations lint: the changes with no way back, one line each (migrations/lint.py)."""

from __future__ import annotations

from pathlib import Path

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode
from safehold.migrations.lint import DIALECTS, Dialect, lint_paths
from safehold.migrations.rules import RULES


@click.group()
def migrations() -> None:
    """Migration safety: find schema changes that a code rollback cannot undo."""


@migrations.command("lint")
@click.argument("paths", nargs=-1)
@click.option(
    "--dialect",
    type=click.Choice(DIALECTS),
    default="postgres",
    show_default=True,
    help="The SQL dialect of the migrations.",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="RULE",
    help="Accept every finding of RULE (repeatable). In a file: -- safehold: allow RULE.",
)
@click.option(
    "--previous-code",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The previous release's source tree: a dropped column it still names is a finding.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_state
def lint(
    state: CliState,
    paths: tuple[str, ...],
    dialect: Dialect,
    allow: tuple[str, ...],
    previous_code: Path | None,
    as_json: bool,
) -> int:
    """Lint SQL migration files (or a folder of them, or - for stdin).

    Exit 0 when no change lacks a way back, 4 when one does, so a deploy script can stop:
    `safehold migrations lint migrations/ || exit 1`. Lint the SQL a framework prints, e.g.
    `python manage.py sqlmigrate shop 0042 | safehold migrations lint -`.
    """
    report = lint_paths(paths, dialect, allow, previous_code)
    code = ExitCode.UNSAFE if report.findings else ExitCode.OK
    if as_json:
        state.emit_json({**report.to_json(), "exit_code": code})
        return code
    for item in report.findings:
        state.say(item.one_line())
    files = len(report.files)
    accepted = f", {len(report.allowed)} allowed" if report.allowed else ""
    if report.findings:
        rules = sorted({item.rule for item in report.findings})
        state.say(
            f"{len(report.findings)} change(s) with no way back in {files} file(s){accepted}"
            f" ({', '.join(rules)}); fix them, or accept one with `-- safehold: allow RULE`"
        )
    else:
        state.say(f"no change without a way back in {files} file(s){accepted}")
    return code


@migrations.command("rules")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as JSON.")
@pass_state
def rules(state: CliState, as_json: bool) -> None:
    """List the lint rules: what each catches and the safer pattern."""
    if as_json:
        state.emit_json(
            [
                {"rule": rule.id, "why": rule.why, "safer": rule.safer, "undo": rule.undo}
                for rule in RULES.values()
            ]
        )
        return
    for rule in RULES.values():
        state.say(f"{rule.id}: {rule.why}")


COMMANDS: list[click.Command] = [migrations]
