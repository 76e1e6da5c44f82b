"""Commands of this module are registered in cli/main.py; the list fills as they land."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
