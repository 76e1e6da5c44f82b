"""The release ledger: `release start`, `release finish`, `releases`, kept as write-once records
`safehold/releases/<id>` (docs/format.md section 14).

A release start takes the pre-deploy snapshot (held while the release is among the newest
`[release] keep`), and notes the migrations the database has applied and its schema. Finish
notes them again, so the ledger knows what the deploy changed and whether rolling the code
back alone is safe (migrations/schema.py holds that rule). Rollback (app/rollback.py) reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from safehold.app.holds import Hold, end_holds, hold_snapshot, list_holds
from safehold.app.plan_backup import PlanBackupResult, backup_plan
from safehold.errors import UsageError
from safehold.migrations.lint import LintReport, lint_paths
from safehold.migrations.schema import (
    Schema,
    SchemaChange,
    schema_change,
    schema_from_json,
    schema_to_json,
)
from safehold.plan.models import MySQLConfig, Plan, PostgresConfig, SQLiteConfig
from safehold.plan.release import ReleaseConfig
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.sources.dbquery import Database
from safehold.sources.schema_reader import database_url, read_migrations, read_schema

KIND = "releases"
Status = Literal["ok", "failed"]
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_+")


@dataclass
class Release:
    """One release as the ledger tells it, its records joined."""

    id: str
    started: str
    who: str
    snapshot: str
    snapshot_name: str
    note: str | None = None
    git_sha: str | None = None
    framework: str = "none"
    migrations_before: list[str] = field(default_factory=list)
    schema_before: Schema = field(default_factory=dict)
    lint: list[dict[str, Any]] = field(default_factory=list)
    hold: str | None = None
    finished: str | None = None
    status: str | None = None
    migrations_after: list[str] | None = None
    schema_after: Schema | None = None
    rolled_back: str | None = None  # when a rollback away from this release ran

    @property
    def applied(self) -> list[str]:
        """The migrations this deploy applied (known once finished)."""
        if self.migrations_after is None:
            return []
        before = set(self.migrations_before)
        return [name for name in self.migrations_after if name not in before]

    @property
    def change(self) -> SchemaChange | None:
        if self.schema_after is None:
            return None
        return schema_change(self.schema_before, self.schema_after)

    def reversible(self) -> tuple[bool | None, str]:
        """Whether rolling the code back to the release before is safe, and why."""
        change = self.change
        if change is None:
            return None, "not finished: the schema after the deploy is not known"
        reasons = change.reasons_unsafe()
        if reasons:
            return False, "; ".join(reasons)
        return True, "additive" if not change.empty else "no schema change"

    def to_json(self) -> dict[str, Any]:
        reversible, why = self.reversible()
        change = self.change
        return {
            "id": self.id,
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "who": self.who,
            "note": self.note,
            "git_sha": self.git_sha,
            "snapshot": self.snapshot,
            "snapshot_name": self.snapshot_name,
            "framework": self.framework,
            "migrations_applied": self.applied,
            "schema_change": change.to_json() if change else None,
            "reversible_by_code_rollback": reversible,
            "why": why,
            "lint": self.lint,
            "rolled_back": self.rolled_back,
        }


@dataclass(frozen=True)
class StartResult:
    release: Release
    backup: PlanBackupResult
    lint: LintReport | None
    unheld: list[str]  # releases whose snapshot is no longer held


def release_config(plan: Plan) -> ReleaseConfig:
    return plan.release or ReleaseConfig.model_validate({})


def release_database(plan: Plan) -> Database:
    """Where the release's migrations and schema are read: the live database."""
    config = release_config(plan)
    candidates = [
        s for s in plan.sources if isinstance(s, PostgresConfig | MySQLConfig | SQLiteConfig)
    ]
    if not candidates:
        raise UsageError("the plan has no database source for the release ledger",
                         hint="add a postgres, mysql or sqlite source")  # fmt: skip
    source = next((s for s in candidates if s.name == config.source), candidates[0])
    if isinstance(source, SQLiteConfig):
        return Database("sqlite", str(source.path), source.name)
    dbname = config.database or (source.databases[0] if source.databases else None)
    kind = "postgres" if isinstance(source, PostgresConfig) else "mysql"
    return Database(
        kind, database_url(source.url, dbname), f"{source.name}/{dbname or ''}".rstrip("/")
    )


def release_source_name(plan: Plan) -> str:
    return release_database(plan).label.split("/")[0]


def load_ledger(repo: Repository) -> list[Release]:
    """Every release, oldest first."""
    releases: dict[str, Release] = {}
    later: list[dict[str, Any]] = []
    for _, document in repo.load_records(KIND):
        if document.get("type") == "start":
            release = _from_start(document)
            releases[release.id] = release
        else:
            later.append(document)
    for document in sorted(later, key=lambda d: str(d.get("when", ""))):
        finished = releases.get(str(document.get("release", "")))
        if document.get("type") == "finish" and finished is not None:
            release = finished
            release.finished = str(document.get("when"))
            release.status = str(document.get("status"))
            release.migrations_after = [str(m) for m in document.get("migrations") or []]
            release.schema_after = schema_from_json(document.get("schema") or {})
        elif document.get("type") == "rollback" and document.get("exit_code") == 0:
            for rolled in document.get("rolled_back") or []:
                if str(rolled) in releases:
                    releases[str(rolled)].rolled_back = str(document.get("when"))
    return sorted(releases.values(), key=lambda r: (r.started, r.id))


def rollback_records(repo: Repository) -> list[dict[str, Any]]:
    found = [doc for _, doc in repo.load_records(KIND) if doc.get("type") == "rollback"]
    return sorted(found, key=lambda d: str(d.get("when", "")))


def _from_start(document: dict[str, Any]) -> Release:
    return Release(
        id=str(document["release"]),
        started=str(document.get("when", "")),
        who=str(document.get("who", "")),
        snapshot=str(document.get("snapshot", "")),
        snapshot_name=str(document.get("snapshot_name", "")),
        note=document.get("note"),
        git_sha=document.get("git_sha"),
        framework=str(document.get("framework", "none")),
        migrations_before=[str(m) for m in document.get("migrations") or []],
        schema_before=schema_from_json(document.get("schema") or {}),
        lint=list(document.get("lint") or []),
        hold=document.get("hold"),
    )


def start_release(
    repo: Repository,
    plan: Plan,
    release_id: str,
    *,
    note: str | None = None,
    git_sha: str | None = None,
    lint: Sequence[str] = (),
    allow: Sequence[str] = (),
) -> StartResult:
    """Lint (when asked), read the database's migrations and schema, take the held pre-deploy
    snapshot (`premigration` when the lint found a change with no way back) and record it."""
    _check_id(release_id)
    if any(release.id == release_id for release in load_ledger(repo)):
        raise UsageError(
            f"release {release_id} is already in the ledger",
            hint="give each deploy its own --id, like the git tag or build number",
        )
    report = lint_paths(lint, _dialect(plan), allow) if lint else None
    config = release_config(plan)
    database = release_database(plan)
    framework, migrations = read_migrations(database, config.migrations, config.migrations_query)
    schema = read_schema(database)
    risky = bool(report and report.blocks_rollback)
    backup = backup_plan(
        repo, plan, reason="premigration" if risky else "predeploy", note=release_id
    )
    snapshot = backup.snapshot
    made = hold_snapshot(repo, snapshot, f"release {release_id}: pre-deploy snapshot")
    document: dict[str, Any] = {
        "type": "start",
        "release": release_id,
        "when": format_time(repo.clock()),
        "who": _who(repo),
        "note": note,
        "git_sha": git_sha,
        "snapshot": snapshot.id,
        "snapshot_name": snapshot.name or "",
        "framework": framework,
        "migrations": migrations,
        "schema": schema_to_json(schema),
        "lint": [item.to_json() for item in report.findings] if report else [],
        "hold": made.id,
    }
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)
    release = _from_start(document)
    unheld = _release_old_holds(repo, config.keep)
    return StartResult(release, backup, report, unheld)


def finish_release(repo: Repository, plan: Plan, release_id: str, status: Status) -> Release:
    """Record what the deploy applied and changed; the release must have been started."""
    release = find_release(repo, release_id)
    if release.finished is not None:
        raise UsageError(f"release {release_id} was already finished at {release.finished}",
                         hint="start a new release for the next deploy")  # fmt: skip
    config = release_config(plan)
    database = release_database(plan)
    _, migrations = read_migrations(database, config.migrations, config.migrations_query)
    schema = read_schema(database)
    document = {
        "type": "finish",
        "release": release_id,
        "when": format_time(repo.clock()),
        "who": _who(repo),
        "status": status,
        "migrations": migrations,
        "schema": schema_to_json(schema),
    }
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)
    return find_release(repo, release_id)


def find_release(repo: Repository, release_id: str) -> Release:
    ledger = load_ledger(repo)
    for release in ledger:
        if release.id == release_id:
            return release
    known = ", ".join(release.id for release in ledger[-5:]) or "none yet"
    raise UsageError(
        f"no release {release_id} in the ledger",
        hint=f"the newest releases: {known} (safehold releases lists them)",
    )


def _release_old_holds(repo: Repository, keep: int) -> list[str]:
    """End the pre-deploy holds of releases older than the newest `keep`."""
    ledger = load_ledger(repo)
    old = {release.hold: release.id for release in ledger[:-keep] if release.hold}
    ended: list[Hold] = [hold for hold in list_holds(repo) if hold.id in old]
    end_holds(repo, ended)
    return [old[hold.id] for hold in ended]


def _check_id(release_id: str) -> None:
    if not release_id or len(release_id) > 64 or not set(release_id) <= _ID_CHARS:
        raise UsageError(
            f"invalid release id {release_id!r}",
            hint="use up to 64 letters, digits and . - _ +, like v42 or 2026.01.14-1",
        )


def _who(repo: Repository) -> str:
    return f"{repo.host.username}@{repo.host.hostname}"


def _dialect(plan: Plan) -> Literal["postgres", "mysql"]:
    return "mysql" if release_database(plan).kind == "mysql" else "postgres"


def lint_dialect(plan: Plan) -> Literal["postgres", "mysql"]:
    """The SQL dialect of the release's database (for `migrations lint` within a plan)."""
    return _dialect(plan)
