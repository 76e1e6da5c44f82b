"""safehold's Python API: the few calls a script needs, each doing what its command does.

    import safehold

    plan = safehold.load_plan("/srv/shop/safehold.toml")
    result = safehold.backup(plan, reason="predeploy", note="v42")     # safehold backup
    repo = safehold.open_repository(plan)                               # the first destination
    restore = safehold.plan_restore(plan, repo, source="db", target="postgresql://…/shop_copy")
    print(restore.allowed, restore.total_bytes)                        # restore --dry-run
    report = safehold.execute_restore(repo, restore)                    # restore
    record = safehold.drill(plan)                                       # safehold drill
    health = safehold.observe(plan)                                     # what watch/status read

Every call raises `SafeholdError` (with `.message`, `.hint` and `.exit_code`) for anything a
user must fix, never prints, and never prompts: passwords come from the plan and the
environment exactly as for the CLI (see `safehold.app.opener`). What is public is what
`safehold.__all__` lists, with the attributes and methods the docstrings describe; everything
else (`safehold.repo`, `safehold.app`, …) is internal and may change between releases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from safehold.app.destinations import copy_after_backup
from safehold.app.opener import (
    RepositoryRequest,
    load_cli_plan,
    open_destination,
)
from safehold.app.opener import (
    open_repository as open_typed_repository,
)
from safehold.app.plan_backup import PlanBackupResult, backup_plan
from safehold.app.restore import RestorePlan, plan_source_restore
from safehold.app.restore import execute_restore as _execute_restore
from safehold.drills.record import DrillRecord
from safehold.drills.runner import DrillRequest, drill_plan
from safehold.health.observe import Observation, destination_opener
from safehold.health.observe import observe as _observe
from safehold.plan.models import Plan
from safehold.redaction import register_redactor
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import RestoreReport

__all__ = [
    "DrillRecord",
    "Observation",
    "Plan",
    "PlanBackupResult",
    "Repository",
    "RestorePlan",
    "RestoreReport",
    "Snapshot",
    "backup",
    "drill",
    "execute_restore",
    "load_plan",
    "observe",
    "open_repository",
    "plan_restore",
    "snapshots",
]


def load_plan(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Plan:
    """Read and validate a plan file (default: `SAFEHOLD_PLAN`, else `./safehold.toml`).

    `${VAR}` references are filled from `environ` and the `.env` beside the plan; every
    secret the plan holds is registered so that no error or report of safehold shows it.
    Raises PlanError (a SafeholdError) naming the file, the key and what is wrong."""
    plan = load_cli_plan(str(path) if path is not None else None, environ)
    register_redactor(plan.redactor())
    return plan


def open_repository(
    plan: Plan | None = None,
    *,
    destination: str | None = None,
    location: str | None = None,
    password_file: str | None = None,
    password_command: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Repository:
    """Open a repository: a plan's destination (default: its first), or a `location` as `-r`
    takes it (a folder, `s3:…`, `sftp:…`) with its password from `password_file`,
    `password_command` or the environment (`SAFEHOLD_PASSWORD_FILE`, `_COMMAND`,
    `SAFEHOLD_PASSWORD`). Raises RepositoryNotFoundError, WrongPasswordError or
    PasswordSourceError."""
    if location is None and plan is not None:
        return open_destination(plan, destination, environ)
    request = RepositoryRequest(
        location=location, password_file=password_file, password_command=password_command
    )
    return open_typed_repository(request, environ)


def snapshots(repo: Repository, plan: Plan | None = None) -> list[Snapshot]:
    """The repository's snapshots, oldest first; with a plan, only that app and env's."""
    found = repo.list_snapshots()
    if plan is None:
        return found
    return [
        s for s in found if s.safehold.get("app") == plan.app and s.safehold.get("env") == plan.env
    ]


def backup(
    plan: Plan,
    *,
    reason: str = "manual",
    note: str | None = None,
    sources: list[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> PlanBackupResult:
    """Back up every source of the plan (or the named `sources`) into ONE snapshot of its first
    destination, then copy to the destinations marked `copy_after_backup`: `safehold backup`.

    A source that fails does not raise: the snapshot is saved incomplete and
    `result.failed` names the source and why. Raises SafeholdError when no snapshot could be
    written at all (no repository, wrong password, repository locked, …)."""
    repo = open_destination(plan, None, environ)
    result = backup_plan(repo, plan, reason=reason, note=note, only_sources=sources)
    copy_after_backup(plan, environ)
    return result


def plan_restore(
    plan: Plan,
    repo: Repository,
    *,
    target: str,
    source: str | None = None,
    snapshot: str = "latest",
    to_production: bool = False,
    yes: bool = False,
    identity: str | Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> RestorePlan:
    """What restoring `source` (may be left out when the plan has one) from `snapshot` into
    `target` would do, without doing it: `safehold restore … --dry-run`.

    The plan lists the items and bytes to fetch, says whether `target` is the source's live
    location (`production`), whether the restore is `allowed` (production needs both
    `to_production` and `yes`), and which evidence snapshot comes first. A refused plan is
    returned, not raised: `execute_restore` raises its `refusal`. A secrets source is
    decrypted with the age identity file `identity` (else SAFEHOLD_AGE_IDENTITY_FILE, else
    the plan's identity_command)."""
    return plan_source_restore(
        repo, plan, snapshot, target, source_name=source, to_production=to_production, yes=yes,
        identity=Path(identity) if identity is not None else None, environ=environ,
    )  # fmt: skip


def execute_restore(repo: Repository, restore: RestorePlan) -> RestoreReport:
    """Carry out a plan from `plan_restore`: the evidence snapshot first when the target is
    production, then the restore, verified against what the snapshot recorded (row counts,
    checksums). Raises the plan's refusal when it was not allowed."""
    return _execute_restore(repo, restore)


def drill(
    plan: Plan,
    *,
    snapshot: str = "latest",
    destination: str | None = None,
    save: bool = True,
    environ: Mapping[str, str] = os.environ,
    identity: str | Path | None = None,
) -> DrillRecord:
    """Restore `snapshot` into a throwaway scratch environment, check it, time it against the
    plan's RTO/RPO, tear it down and (with `save`) record it: `safehold drill`. A failed drill
    is a record with `passed` false and its `reasons`, not an exception. With an age
    `identity` file (or the plan's identity_command) secrets sources are decrypted too."""
    request = DrillRequest(
        snapshot=snapshot, destination=destination or "",
        identity=str(identity) if identity is not None else None,
    )  # fmt: skip
    return drill_plan(plan, request, environ, save=save)


def observe(
    plan: Plan, *, now: datetime | None = None, environ: Mapping[str, str] = os.environ
) -> Observation:
    """Read every destination of the plan once (snapshots, the newest drill): the observation
    that `safehold watch`, `metrics` and `status` judge. An unreachable destination is a
    view with an `error`, never an exception."""
    when = now if now is not None else datetime.now(UTC)
    return _observe(plan, when, destination_opener(plan, environ))
