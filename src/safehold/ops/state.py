"""Where operations state lives, and the small records jobs leave there.

The state folder is `SAFEHOLD_STATE_DIR` when set, else `<plan folder>/.safehold/`. It holds
memory, not truth: job outcomes, alert deliveries, open problems, pings, what the schedule
installed, the daemon's heartbeat, and a pending drill request. Losing it loses history
(alerts may repeat once); the backups and drill records live in the repositories."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from safehold.alerts.store import Document, StateStore, parse_time

if TYPE_CHECKING:
    from safehold.plan.models import Plan

STATE_ENV = "SAFEHOLD_STATE_DIR"
DRILL_REQUEST = "drill-request"
Clock = Callable[[], datetime]


def now_local() -> datetime:
    return datetime.now().astimezone()


def state_dir(plan: Plan, environ: Mapping[str, str] = os.environ) -> Path:
    return state_dir_of(plan.base_dir, environ)


def state_dir_of(plan_folder: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """The state folder of the plan in `plan_folder`, without loading the plan."""
    configured = environ.get(STATE_ENV)
    if configured:
        return Path(configured).absolute()
    return plan_folder / ".safehold"


def state_store(plan: Plan, environ: Mapping[str, str] = os.environ) -> StateStore:
    return StateStore(state_dir(plan, environ))


def request_drill(store: StateStore, why: str, clock: Clock = now_local) -> Document:
    """Ask for a drill soon (the deploy hook does this after a schema change)."""
    document: Document = {
        "requested": clock().isoformat(),
        "why": why,
        "host": socket.gethostname(),
    }
    store.write(DRILL_REQUEST, document)
    return document


def pending_drill_request(store: StateStore) -> Document | None:
    document = store.read(DRILL_REQUEST)
    return document if parse_time(document.get("requested")) is not None else None


def take_drill_request(store: StateStore) -> Document | None:
    """The pending request, removed (a drill is about to run for it)."""
    document = pending_drill_request(store)
    if document is not None:
        store.delete(DRILL_REQUEST)
    return document
