"""Alerts for commands started by hand or by a deploy hook: `backup`, `copy`, `forget`/`prune`
and `drill` with a plan send the same failure alert as the scheduled job of that name (problem
key `job:<name>`), and the recovery message when a later run succeeds — so a failed pre-deploy
backup in CI is as loud as a failed nightly one, and one problem is never reported twice.

Commands that a job started (`SAFEHOLD_JOB` in their environment) stay quiet: the job wrapper
(app/jobs.py) alerts for them. Sending never raises: a failed delivery is recorded in the state
folder (status shows it) and returned as text for a warning."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from safehold.alerts.notify import Alert
from safehold.app.state import state_store, tracker_for
from safehold.errors import ExitCode
from safehold.plan.models import Plan

JOB_ENV = "SAFEHOLD_JOB"

_WHAT = {
    "backup": "backup",
    "copy": "copy to the other destinations",
    "prune": "forget + prune (retention)",
    "drill": "restore drill",
}
_FIX = {
    "backup": "run `safehold backup` again and read the error; `safehold status` shows what "
    "else is wrong",
    "copy": "check the destination's credentials and network, then `safehold copy`",
    "prune": "run `safehold forget --dry-run` to see what the policy would remove",
    "drill": "read the drill's report (`safehold drills`), fix the cause, `safehold drill`",
}


@dataclass
class CommandOutcome:
    exit_code: int
    errors: list[str] = field(default_factory=list)
    hint: str = ""


def command_alert(plan: Plan, job: str, outcome: CommandOutcome) -> Alert:
    partial = outcome.exit_code == ExitCode.PARTIAL and job == "backup"
    what = (
        f"The {_WHAT.get(job, job)} of {plan.app} ({plan.env}) started by hand "
        f"{'saved an INCOMPLETE snapshot' if partial else 'failed'} on {socket.gethostname()} "
        f"(exit code {outcome.exit_code})."
    )
    why = "; ".join(outcome.errors[:3]) or f"it exited with code {outcome.exit_code}"
    title = f"{job} {'INCOMPLETE' if partial else 'FAILED'}"
    return Alert(f"job:{job}", "error", title, what, why, outcome.hint or _FIX.get(job, ""))


def report_command(
    plan: Plan, job: str, outcome: CommandOutcome, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """Alert on a failure, send "recovered" on a success after one; returns what went wrong
    while sending (nothing to send, or no channels: an empty list)."""
    if environ.get(JOB_ENV) or not plan.alerts.channels:
        return []
    problems = [] if outcome.exit_code == ExitCode.OK else [command_alert(plan, job, outcome)]
    try:
        tracker = tracker_for(plan, state_store(plan, environ))
        results = tracker.report(problems, checked=[f"job:{job}"])
    except Exception as err:  # never hide the command's own result
        return [f"could not send the alert: {err}"]
    return [
        f"the alert was not delivered to {delivery.channel}: {delivery.error}"
        for result in results
        for delivery in result.failed
    ]
