"""State shared by every command: where the repository is, how to talk to the user."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console

from safehold.app.password import PasswordOptions
from safehold.app.session import RepositoryOptions, open_repository
from safehold.repo.repository import Repository


@dataclass
class CliState:
    repo_options: RepositoryOptions
    quiet: bool = False
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

    @property
    def show_progress(self) -> bool:
        return not self.quiet and self.err.is_terminal

    def open(self) -> Repository:
        return open_repository(self.repo_options, os.environ)

    def say(self, message: str) -> None:
        """Human output on stdout, suppressed by --quiet."""
        if not self.quiet:
            self.out.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {message}", markup=False, style="yellow")

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def make_state(repo: str | None, password_file: str | None, password_command: str | None,
               quiet: bool) -> CliState:  # fmt: skip
    options = RepositoryOptions(repo, PasswordOptions(password_file, password_command))
    return CliState(options, quiet=quiet)


pass_state = click.make_pass_decorator(CliState)
