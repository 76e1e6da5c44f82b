"""The open incident of a plan on this machine, and its timeline: the state folder's
`incident` document (app/incident.py opens and ends it). Light on purpose: the CLI reads it
after every command (`note_event`), and a command that is not about a plan loads nothing else
for it.

Core logic: nothing here prints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from safehold.alerts.store import Document, StateStore

STATE = "incident"  # the state folder document of the open incident
Clock = Callable[[], datetime]


def now() -> datetime:
    return datetime.now().astimezone()


def open_incident(store: StateStore) -> Document | None:
    """The open incident of this plan on this machine, or None."""
    document = store.read(STATE)
    return document if document.get("opened") else None


def note_event(
    store: StateStore,
    what: str,
    *,
    exit_code: int | None = None,
    details: list[str] | None = None,
    clock: Clock = now,
) -> bool:
    """Append `what` (a command line, redacted by the caller) to the open incident's timeline;
    False when no incident is open."""
    if open_incident(store) is None:
        return False
    event: Document = {"at": clock().isoformat(), "what": what}
    if exit_code is not None:
        event["exit_code"] = exit_code
    if details:
        event["details"] = list(details)

    def change(document: Document) -> None:
        if document.get("opened"):
            document.setdefault("timeline", []).append(event)

    store.update(STATE, change)
    return True
