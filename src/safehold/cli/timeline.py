"""The incident timeline hook: after every command, when an incident is open for the plan in
use, the command line (redacted) and its exit code join the incident's timeline
(app/incident_log.py). main() runs it after each command, so it loads only what it needs: no
plan models, no incident use cases (those are cli/incident_commands.py's)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from safehold.alerts.store import StateStore
from safehold.app.incident_log import note_event, open_incident
from safehold.cli.context import current_state
from safehold.errors import SafeholdError
from safehold.ops.state import state_dir_of
from safehold.plan.locate import find_plan
from safehold.redaction import redact, redact_url

# Commands that only look: not worth a line in the timeline.
_NOT_RECORDED = {
    "incident",
    "status",
    "snapshots",
    "holds",
    "ls",
    "drills",
    "stats",
    "cat",
    "version",
    "help",
    "plan",
    "alerts",
}


_WITH_VALUE = {"-r", "--repo", "--password-file", "--password-command", "--plan"}


def _command_name(argv: list[str]) -> str | None:
    """The command of a command line whose global options come first (main hoists them)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def record_command(argv: list[str], exit_code: int) -> None:
    """After a command: when an incident is open for its plan, add the command line
    (redacted) and its exit code to the incident's timeline. Never raises."""
    state = current_state()
    command = _command_name(argv)
    if state is None or command is None or command in _NOT_RECORDED or not state.has_plan():
        return
    try:
        plan_file = find_plan(
            Path(state.plan_path) if state.plan_path else None, cwd=Path.cwd(), environ=os.environ
        )
        store = StateStore(state_dir_of(plan_file.parent, os.environ))
        if open_incident(store) is None:
            return
        line = redact(redact_url("safehold " + shlex.join(argv)))
        note_event(
            store,
            line,
            exit_code=exit_code,
            details=[redact(note) for note in state.incident_notes],
        )
    except (SafeholdError, OSError):
        return
