"""State shared by every command: where the repository is, how to talk to the user."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from safehold.app.opener import (
    AskPassword,
    RepositoryRequest,
    command_environment,
    load_cli_plan,
    open_destination,
    open_repository,
)
from safehold.errors import PasswordSourceError
from safehold.redaction import redact, register_redactor
from safehold.repo.repository import Repository

if TYPE_CHECKING:  # the plan package (pydantic) loads only when a plan is used
    from rich.console import Console

    from safehold.plan.models import Plan


def make_console(stderr: bool = False) -> Console:
    """The Console a command prints through. rich (~30 ms of imports) loads here, when a
    command first prints: a quiet backup or restore never does."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@dataclass
class CliState:
    repo_options: RepositoryRequest
    quiet: bool = False
    plan_path: str | None = None
    progress_interval: float = 10.0  # seconds between progress lines off a terminal / --json
    failure_details: list[str] = field(default_factory=list)  # why a command failed (alerts)
    incident_notes: list[str] = field(default_factory=list)  # what it did, for an open incident
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def out(self) -> Console:
        """Human output (stdout), made on first use (see make_console)."""
        if self._out is None:
            self._out = make_console()
        return self._out

    @property
    def err(self) -> Console:
        """Warnings and progress (stderr), made on first use (see make_console)."""
        if self._err is None:
            self._err = make_console(stderr=True)
        return self._err

    @property
    def show_progress(self) -> bool:
        return not self.quiet and self.err.is_terminal

    def open(self, plan: Plan | None = None) -> Repository:
        """The repository of -r/SAFEHOLD_REPOSITORY, else the plan's first destination (of
        `plan` when the command already loaded it)."""
        if self.explicit_repository():
            return self.open_request(self.repo_options)
        if self.has_plan():
            return open_destination(plan or self.plan(), environ=self.environ())
        return self.open_request(self.repo_options)  # raises "no repository given"

    def open_request(self, request: RepositoryRequest) -> Repository:
        """A repository given on the command line (-r, or a copy's --from-repo)."""
        return open_repository(request, self.environ(), ask=self.ask_password())

    def environ(self) -> Mapping[str, str]:
        """Where repositories and passwords are looked up: with a plan, its `.env` under the
        process's variables (the rule scheduled jobs follow too); else the process's."""
        return command_environment(self.plan_path, os.environ) if self.has_plan() else os.environ

    def ask_password(self) -> AskPassword | None:
        """A password prompt, only on a terminal (core code never prompts)."""
        return prompt_password if sys.stdin.isatty() else None

    def explicit_repository(self) -> bool:
        return bool(self.repo_options.location or self.environ().get("SAFEHOLD_REPOSITORY"))

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

    def plan(self, only_sources: list[str] | None = None) -> Plan:
        plan = load_cli_plan(self.plan_path, os.environ, only_sources)
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

    def emit_summary(self, value: dict[str, Any]) -> None:
        """The last message of a streaming `--json` command (backup, restore): one line,
        `{"message_type": "summary", ...}`, after its status lines (cli/progress.py)."""
        line = json.dumps({"message_type": "summary", **value}, ensure_ascii=False)
        sys.stdout.write(redact(line) + "\n")
        sys.stdout.flush()


_CURRENT: list[CliState] = []  # the state of the command being run (main reads it after)


def make_state(repo: str | None, password_file: str | None, password_command: str | None,
               quiet: bool, plan: str | None = None,
               progress_interval: float = 10.0) -> CliState:  # fmt: skip
    options = RepositoryRequest(repo, password_file, password_command)
    state = CliState(options, quiet=quiet, plan_path=plan, progress_interval=progress_interval)
    _CURRENT[:] = [state]
    return state


def current_state() -> CliState | None:
    """The CliState of the command this process ran last (None before one started)."""
    return _CURRENT[0] if _CURRENT else None


def prompt_password(prompt: str, confirm: bool) -> bytes:
    """Ask on the terminal (twice when creating something). An empty answer is refused by the
    opener; a second answer that differs is refused here."""
    first = getpass.getpass(prompt)
    if confirm and first and getpass.getpass("enter password again: ") != first:
        raise PasswordSourceError("the passwords do not match", hint="run the command again")
    return first.encode("utf-8")


pass_state = click.make_pass_decorator(CliState)
