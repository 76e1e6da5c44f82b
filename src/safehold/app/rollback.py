"""`safehold rollback`: roll the code back to the previous good release, but first tell whether
that alone is safe, and when it is not, the data path (restore beside production, then copy
back) with the exact commands. Plan, then execute, like restore.

"A rollback is for bad code. A restore is for bad data." The rule for "safe" lives in
migrations/schema.py: the live schema is compared with the target release's, and a change the
old code cannot live with (a dropped table or column, a type change, a new required column)
makes code rollback alone unsafe.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from safehold.app.releases import (
    KIND,
    Release,
    load_ledger,
    release_config,
    release_database,
    release_source_name,
)
from safehold.errors import ExitCode, SafeholdError, UsageError
from safehold.migrations.schema import Schema, SchemaChange, schema_change
from safehold.plan.models import Plan
from safehold.redaction import redact
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.sources.schema_reader import read_migrations, read_schema

_OUTPUT_TAIL = 2000


class RollbackUnsafeError(SafeholdError):
    """Code rollback alone would break the old code or leave its data behind."""

    exit_code = ExitCode.UNSAFE


class RollbackFailedError(SafeholdError):
    """The rollback command ran and failed."""


@dataclass
class RollbackPlan:
    current: Release
    target: Release
    command: str
    change: SchemaChange
    data_path: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    who: str = ""
    rolled_back: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return self.change.reversible

    @property
    def reasons(self) -> list[str]:
        return self.change.reasons_unsafe()

    @property
    def allowed(self) -> bool:
        return not self.owners or self.who in self.owners

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.current.id,
            "to": self.target.id,
            "command": redact(self.command),
            "safe": self.safe,
            "reasons": self.reasons,
            "schema_change_since_target": self.change.to_json(),
            "data_path": self.data_path,
            "owners": self.owners,
            "who": self.who,
            "allowed": self.allowed,
            "rolls_back": self.rolled_back,
        }


@dataclass(frozen=True)
class RollbackResult:
    plan: RollbackPlan
    exit_code: int
    output: str


def current_user(environ: Mapping[str, str]) -> str:
    """Who is rolling back: SAFEHOLD_USER, else the login name."""
    return environ.get("SAFEHOLD_USER") or getpass.getuser()


def plan_rollback(
    repo: Repository, plan: Plan, to: str | None, environ: Mapping[str, str]
) -> RollbackPlan:
    """Choose the release to go back to, compare its schema with the live one, and phrase the
    command and (when needed) the data path. Reads the live database; changes nothing."""
    config = release_config(plan)
    if not config.rollback_command:
        raise UsageError(
            "no rollback command in the plan",
            hint='add [release] rollback_command = "git checkout {git_sha} && ./deploy"',
        )
    ledger = [release for release in load_ledger(repo) if release.rolled_back is None]
    if len(ledger) < 2 and to is None:
        raise UsageError(
            "there is no earlier release to roll back to",
            hint="the ledger needs two releases (safehold releases lists them)",
        )
    current = ledger[-1]
    target = _target(ledger, to)
    database = release_database(plan)
    live = read_schema(database)
    change = schema_change(_schema_at(target, ledger), live)
    between = [r for r in ledger if r.started > target.started]
    first_after = between[0] if between else current
    rollback = RollbackPlan(
        current=current,
        target=target,
        command=_format(config.rollback_command, target, current),
        change=change,
        owners=list(plan.owners.rollback),
        who=current_user(environ),
        rolled_back=[release.id for release in between],
    )
    if not change.reversible:
        framework, now = read_migrations(database, config.migrations, config.migrations_query)
        rollback.data_path = _data_path(
            plan, first_after, rollback.command, change, framework, target, now
        )
    return rollback


def execute_rollback(
    repo: Repository,
    rollback: RollbackPlan,
    *,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
) -> RollbackResult:
    """Run the rollback command and record it. Refuses an unsafe rollback unless `force`, and a
    user not in `[owners] rollback`."""
    if not rollback.allowed:
        raise UsageError(
            f"{rollback.who} may not roll back: [owners] rollback names "
            + ", ".join(rollback.owners),
            hint="ask one of them, or add yourself to [owners] rollback in the plan",
        )
    if not rollback.safe and not force:
        raise RollbackUnsafeError(
            f"rolling the code back to {rollback.target.id} alone is not safe: "
            + "; ".join(rollback.reasons),
            hint="follow the data path shown (safehold rollback --dry-run), or pass --force to"
            " run the code rollback first and then the data path",
        )
    env = {**(environ or os.environ), "SAFEHOLD_RELEASE": rollback.target.id,
           "SAFEHOLD_ROLLBACK_FROM": rollback.current.id}  # fmt: skip
    completed = subprocess.run(
        rollback.command,
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    output = redact((completed.stdout + completed.stderr)[-_OUTPUT_TAIL:])
    document = {
        "type": "rollback",
        "release": rollback.target.id,
        "from": rollback.current.id,
        "rolled_back": rollback.rolled_back if completed.returncode == 0 else [],
        "when": format_time(repo.clock()),
        "who": rollback.who,
        "command": redact(rollback.command),
        "exit_code": completed.returncode,
        "safe": rollback.safe,
        "forced": force and not rollback.safe,
        "reasons": rollback.reasons,
    }
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)
    if completed.returncode != 0:
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        raise RollbackFailedError(
            f"the rollback command exited {completed.returncode}: {last}",
            hint="fix the command in [release] rollback_command and run safehold rollback again",
        )
    return RollbackResult(rollback, completed.returncode, output)


def _target(ledger: list[Release], to: str | None) -> Release:
    current = ledger[-1]
    if to is not None:
        for release in ledger[:-1]:
            if release.id == to:
                return release
        if to == current.id:
            raise UsageError(f"{to} is the current release", hint="name an earlier release")
        known = ", ".join(release.id for release in ledger[:-1][-5:]) or "none"
        raise UsageError(f"no earlier release {to} in the ledger", hint=f"earlier ones: {known}")
    for release in reversed(ledger[:-1]):
        if release.status != "failed":
            return release
    raise UsageError(
        "no earlier release finished well",
        hint="name one with --to ID (safehold releases lists them)",
    )


def _schema_at(target: Release, ledger: list[Release]) -> Schema:
    """The schema the target release ran with: after its deploy, else before the next one."""
    if target.schema_after is not None:
        return target.schema_after
    later = [release for release in ledger if release.started > target.started]
    return later[0].schema_before if later else target.schema_before


def _format(command: str, target: Release, current: Release) -> str:
    values = {
        "{release}": target.id,
        "{git_sha}": target.git_sha or target.id,
        "{snapshot}": target.snapshot[:8],
        "{previous}": current.id,
    }
    for key, value in values.items():
        command = command.replace(key, shlex.quote(value))
    return command


def _data_path(
    plan: Plan,
    changed_by: Release,
    command: str,
    change: SchemaChange,
    framework: str,
    target: Release,
    now: list[str],
) -> list[str]:
    """The restore-beside-production path, as commands to type, for the affected tables."""
    source = release_source_name(plan)
    snapshot = changed_by.snapshot_name or changed_by.snapshot[:8]
    tables = _affected_tables(change)
    table_flags = " ".join(f"--table {shlex.quote(table)}" for table in tables)
    steps = [
        f'safehold restore {snapshot} --source {source} --into "$SIDE_DATABASE_URL"'
        f"   # the data as it was right before {changed_by.id}, beside production",
        f"{command}   # the code of {target.id}",
    ]
    steps += _reverse_migrations(framework, target, now)
    steps.append(
        f"safehold db recover {snapshot} --source {source} {table_flags} --changed restore"
        f" --dry-run   # then again with --yes: copies the lost values back"
    )
    return steps


def _affected_tables(change: SchemaChange) -> list[str]:
    tables = list(change.tables_dropped)
    for entry in change.columns_dropped + change.columns_changed + change.columns_required:
        table = entry.split(":")[0].rsplit(".", 1)[0]
        if table not in tables:
            tables.append(table)
    return tables


def _reverse_migrations(framework: str, target: Release, now: list[str]) -> list[str]:
    wanted = target.migrations_after if target.migrations_after is not None else []
    extra = [name for name in now if name not in set(wanted)]
    if not extra:
        return []
    if framework == "django":
        steps = []
        apps = sorted({name.split(":")[0] for name in extra})
        for app in apps:
            kept = [name.split(":", 1)[1] for name in wanted if name.split(":")[0] == app]
            steps.append(f"python manage.py migrate {app} {kept[-1] if kept else 'zero'}"
                         "   # re-creates what the newer migrations removed (empty)")  # fmt: skip
        return steps
    if framework == "alembic" and wanted:
        return [f"alembic downgrade {wanted[-1]}   # the schema of {target.id}"]
    return [f"undo the migrations applied since {target.id}: {', '.join(extra)}"]
