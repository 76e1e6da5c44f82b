"""Heavy command modules load only when one of their commands runs; the table in cli/main.py
that names them must match what the modules define, and the rest of the CLI must not pull
them in (the migration linter's sqlglot and pglast cost every other command ~0.15 CPU-s)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import click

from safehold.cli import main

SRC = str(Path(main.__file__).resolve().parents[2])


def test_the_lazy_table_names_exactly_the_commands_of_its_modules() -> None:
    by_module: dict[str, set[str]] = {}
    for name, module in main.LAZY_COMMANDS.items():
        by_module.setdefault(module, set()).add(name)
    for module, names in by_module.items():
        commands = importlib.import_module(module).COMMANDS
        assert {command.name for command in commands} == names, module


def test_lazy_commands_are_listed_resolved_and_run() -> None:
    ctx = click.Context(main.cli)
    listed = main.cli.list_commands(ctx)
    assert set(main.LAZY_COMMANDS) <= set(listed)
    assert listed == sorted(listed)
    for name in main.LAZY_COMMANDS:
        command = main.cli.get_command(ctx, name)
        assert command is not None and command.name == name
    env = {**os.environ, "PYTHONPATH": SRC}
    shown = subprocess.run(
        [sys.executable, "-m", "safehold", "migrations", "--help"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "Usage: safehold migrations" in shown.stdout


def test_starting_the_cli_does_not_import_the_heavy_modules() -> None:
    probe = (
        "import sys, safehold.cli.main\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlglot', 'pglast')\n"
        "               or m.startswith('safehold.cli.migration_commands'))\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == ""
