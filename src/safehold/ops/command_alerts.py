"""Alerts for commands started by hand or by a deploy hook: `backup`, `copy`, `forget`/`prune`
and `drill` with a plan send the same failure alert as the scheduled job of that name (problem
key `job:<name>`), and the recovery message when a later run succeeds — so a failed pre-deploy
backup in CI is as loud as a failed nightly one, and one problem is never reported twice.

Commands that a job started (`SAFEHOLD_JOB` in their environment) stay quiet: the job wrapper
(app/jobs.py) alerts for them. Sending never raises: a failed delivery is recorded in the state
folder (status shows it) and returned as text for a warning."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from safehold.errors import ExitCode
from safehold.ops.alerting import tracker_for
from safehold.ops.jobs import JOB_ENV, job_failure_alert
from safehold.ops.state import state_store
from safehold.plan.models import Plan


@dataclass
class CommandOutcome:
    exit_code: int
    errors: list[str] = field(default_factory=list)
    hint: str = ""


def report_command(
    plan: Plan, job: str, outcome: CommandOutcome, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """Alert on a failure, send "recovered" on a success after one; returns what went wrong
    while sending (nothing to send, or no channels: an empty list)."""
    if environ.get(JOB_ENV) or not plan.alerts.channels:
        return []
    problems = []
    if outcome.exit_code != ExitCode.OK:
        problems.append(
            job_failure_alert(
                plan, job, outcome.exit_code, outcome.errors, outcome.hint, by_hand=True
            )
        )
    try:
        tracker = tracker_for(plan, state_store(plan, environ))
        results = tracker.report(problems, checked=[f"job:{job}"], reporter=job)
    except Exception as err:  # never hide the command's own result
        return [f"could not send the alert: {err}"]
    return [
        f"the alert was not delivered to {delivery.channel}: {delivery.error}"
        for result in results
        for delivery in result.failed
    ]
