"""The plan's alert channels, problem tracker and dead-man pings, wired to its state folder
(ops/state.py). Apart from ops/state.py because these bring the senders (apprise's hand-off,
urllib): reading or writing the state folder does not need them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safehold.alerts.notify import Notifier
from safehold.alerts.pings import Pinger
from safehold.alerts.problems import ProblemTracker
from safehold.alerts.store import StateStore
from safehold.ops.state import Clock, now_local

if TYPE_CHECKING:
    from safehold.plan.models import Plan


def notifier_for(plan: Plan, store: StateStore, clock: Clock = now_local) -> Notifier:
    return Notifier(
        plan.alerts.channels,
        clock=clock,
        redact=plan.redactor(),
        store=store,
        prefix=f"{plan.name_prefix}: ",
    )


def tracker_for(plan: Plan, store: StateStore, clock: Clock = now_local) -> ProblemTracker:
    return ProblemTracker(store, notifier_for(plan, store, clock), plan.alerts.reminder)


def pinger_for(plan: Plan, store: StateStore, clock: Clock = now_local) -> Pinger:
    return Pinger(plan.pings, clock=clock, redact=plan.redactor(), store=store)
