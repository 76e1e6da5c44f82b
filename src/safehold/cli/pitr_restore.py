"""`restore latest --source db --at MOMENT --into …`: the point-in-time restore command."""

from __future__ import annotations

from datetime import UTC, datetime

from safehold.cli.context import CliState
from safehold.errors import ExitCode, UsageError
from safehold.pitr.recover import RecoveryTarget
from safehold.pitr.restore import execute_pitr_restore, parse_at, plan_pitr_restore
from safehold.pitr.walnames import parse_lsn


def recovery_target(
    at: str | None, before_xid: int | None, before_lsn: str | None
) -> RecoveryTarget:
    given = [value for value in (at, before_xid, before_lsn) if value is not None]
    if len(given) != 1:
        raise UsageError("give one of --at, --before-xid, --before-lsn")
    if at is not None:
        return RecoveryTarget(time=parse_at(at, datetime.now(UTC)))
    if before_xid is not None:
        return RecoveryTarget(xid=before_xid)
    assert before_lsn is not None
    return RecoveryTarget(lsn=parse_lsn(before_lsn))


def pitr_restore(
    state: CliState,
    source_name: str | None,
    into: str,
    at: str | None,
    before_xid: int | None,
    before_lsn: str | None,
    dry_run: bool,
    as_json: bool,
) -> int:
    target = recovery_target(at, before_xid, before_lsn)
    plan = state.require_plan("restore --at")
    redact = plan.redactor()
    repo = state.open(plan)
    pitr = plan_pitr_restore(repo, plan, source_name, into, target)
    if dry_run:
        if as_json:
            state.emit_json({"dry_run": True, **pitr.to_json(redact)})
        else:
            for line in pitr.lines(redact):
                state.say(line)
            state.say("dry run: nothing was restored")
        return ExitCode.OK
    report = execute_pitr_restore(repo, plan, pitr, state.environ())
    if as_json:
        state.emit_json(
            {
                **pitr.to_json(redact),
                "seconds": round(report.seconds, 3),
                "summary": [redact(line) for line in report.summary],
                "details": report.details,
                "warnings": [redact(w) for w in report.warnings],
            }
        )
    else:
        state.say(f"restored {pitr.source} to {target.describe()} from base backup "
                  f"{pitr.base.label} in {report.seconds:.1f} s")  # fmt: skip
        for line in report.summary:
            state.say(f"  {redact(line)}")
    for warning in report.warnings:
        state.warn(redact(warning))
    return ExitCode.PARTIAL if report.warnings else ExitCode.OK
