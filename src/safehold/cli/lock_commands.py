"""`safehold lock status`: how long the newest snapshot stays protected by S3 Object Lock."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode, SafeholdError
from safehold.repo.objectlock import LockStatus, lock_status
from safehold.repo.repository import Repository


@click.group("lock")
def lock() -> None:
    """S3 Object Lock: what the newest backups are protected by."""


def _status_json(name: str, location: str, status: LockStatus) -> dict[str, object]:
    return {
        "destination": name,
        "location": location,
        "object_lock": status.supported,
        "mode": status.mode,
        "days": status.days,
        "snapshot": status.snapshot.id if status.snapshot else None,
        "objects": status.objects,
        "earliest_retain_until": status.earliest.isoformat() if status.earliest else None,
        "earliest_object": status.earliest_object or None,
        "required": status.required.isoformat() if status.required else None,
        "meets_policy": status.meets_policy,
        "problem": status.problem() or None,
        "unlocked": status.unlocked,
        "errors": status.errors,
    }


def _status_line(name: str, location: str, status: LockStatus) -> str:
    head = f"{name}  {location}" if name else location
    if not status.supported:
        return f"{head}: no Object Lock (not S3 storage)"
    if status.snapshot is None:
        return f"{head}: no snapshot yet"
    policy = f"{status.mode.lower()} {status.days:g} days" if status.mode else "no lock policy"
    if status.earliest is None and not status.unlocked and not status.errors:
        return f"{head}: {policy}; no object of snapshot {status.snapshot.short_id} is locked"
    verdict = "OK" if status.meets_policy else f"BELOW POLICY: {status.problem()}"
    if status.mode is None:
        verdict = "(no policy to compare with)"
    earliest = (
        f"{status.earliest:%Y-%m-%d %H:%M} UTC "
        f"({(status.earliest - status.now).total_seconds() / 86400:.1f} days, "
        f"{status.earliest_object})"
        if status.earliest
        else "none"
    )
    return (
        f"{head}: {policy}; newest snapshot {status.snapshot.short_id}, {status.objects} "
        f"object(s), earliest retain-until {earliest}  {verdict}"
    )


@lock.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def status(state: CliState, as_json: bool) -> int:
    """Per destination: the earliest retain-until date among the objects of the newest
    snapshot (read from the server), and whether it meets object_lock_days."""
    targets: list[tuple[str, str, Repository | SafeholdError]] = []
    if state.explicit_repository() or not state.has_plan():
        repo = state.open()
        targets.append(("", repo.backend.location, repo))
    else:
        from safehold.app.opener import open_destination

        plan = state.plan()
        for destination in plan.destinations:
            try:
                opened: Repository | SafeholdError = open_destination(
                    plan, destination.name, state.environ()
                )
            except SafeholdError as err:
                opened = err
            targets.append((destination.name, destination.location(), opened))
    rows: list[dict[str, object]] = []
    failed = False
    for name, location, opened in targets:
        if isinstance(opened, SafeholdError):
            failed = True
            rows.append({"destination": name, "location": location, "error": opened.message})
            if not as_json:
                state.say(f"{name}  {location}: cannot open: {opened.message}")
            continue
        result = lock_status(opened)
        failed = failed or not result.meets_policy
        rows.append(_status_json(name, location, result))
        if not as_json:
            state.say(_status_line(name, location, result))
    if as_json:
        state.emit_json({"checked_at": datetime.now(UTC).isoformat(), "destinations": rows})
    return ExitCode.ERROR if failed else ExitCode.OK


COMMANDS = [lock]
