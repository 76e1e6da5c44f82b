"""State shared by every command: where the repository is, how to talk to the user."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from safehold.app.password import PasswordOptions
from safehold.app.session import RepositoryOptions, open_repository
from safehold.redaction import redact, register_redactor
from safehold.repo.repository import Repository

if TYPE_CHECKING:  # the plan package (pydantic) loads only when a plan is used
    from safehold.plan.models import Plan


@dataclass
class CliState:
    repo_options: RepositoryOptions
    quiet: bool = False
    plan_path: str | None = None
    failure_details: list[str] = field(default_factory=list)  # why a command failed (alerts)
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

    @property
    def show_progress(self) -> bool:
        return not self.quiet and self.err.is_terminal

    def open(self) -> Repository:
        """The repository of -r/SAFEHOLD_REPOSITORY, else the plan's first destination."""
        if self.explicit_repository():
            return open_repository(self.repo_options, os.environ)
        if self.has_plan():
            from safehold.app.plan_session import open_plan_repository

            return open_plan_repository(self.plan(), environ=os.environ)
        return open_repository(self.repo_options, os.environ)  # raises "no repository given"

    def explicit_repository(self) -> bool:
        return bool(self.repo_options.location or os.environ.get("SAFEHOLD_REPOSITORY"))

    def has_plan(self) -> bool:
        return bool(
            self.plan_path or os.environ.get("SAFEHOLD_PLAN") or os.path.exists("safehold.toml")
        )

    def require_plan(self, command: str) -> Plan:
        """The plan, for commands that only work with one."""
        if not self.has_plan():
            from safehold.errors import UsageError

            raise UsageError(
                f"`safehold {command}` needs a plan file (safehold.toml)",
                hint="write one with `safehold init`, or pass --plan PATH",
            )
        return self.plan()

    def plan(self) -> Plan:
        from safehold.app.plan_session import load_cli_plan

        plan = load_cli_plan(self.plan_path, os.environ)
        register_redactor(plan.redactor())
        return plan

    def say(self, message: str) -> None:
        """Human output on stdout, suppressed by --quiet, secrets redacted."""
        if not self.quiet:
            self.out.print(redact(message), markup=False)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {redact(message)}", markup=False, style="yellow")

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(redact(json.dumps(value, indent=2, ensure_ascii=False)) + "\n")
        sys.stdout.flush()


def make_state(repo: str | None, password_file: str | None, password_command: str | None,
               quiet: bool, plan: str | None = None) -> CliState:  # fmt: skip
    options = RepositoryOptions(repo, PasswordOptions(password_file, password_command))
    return CliState(options, quiet=quiet, plan_path=plan)


pass_state = click.make_pass_decorator(CliState)
