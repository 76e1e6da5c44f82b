"""`pitr setup`: what the server must say for WAL archiving into the repository, and the
exact `ALTER SYSTEM` statements that make it so (run by `--apply` when the user may).

`archive_timeout` is chosen from the source's RPO: half of it (between 10 s and 1 h), so an
idle-then-busy server never holds more than half an RPO of changes in an unarchived segment.
A forced switch fills the rest of the segment with zeros; compressed and deduplicated in the
repository that costs a few kilobytes, not 16 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from safehold.pitr.errors import PitrError
from safehold.sources.postgres import PostgresSource

MIN_TIMEOUT_S = 10
MAX_TIMEOUT_S = 3600


def archive_timeout_for(rpo: timedelta) -> int:
    return int(max(MIN_TIMEOUT_S, min(MAX_TIMEOUT_S, rpo.total_seconds() // 2)))


@dataclass
class SettingCheck:
    name: str
    current: str
    wanted: str
    ok: bool
    needs_restart: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SetupReport:
    server_version: str
    checks: list[SettingCheck]
    statements: list[str]
    can_apply: bool
    problems: list[str] = field(default_factory=list)
    archiver: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks) and not self.problems

    @property
    def needs_restart(self) -> bool:
        return any(check.needs_restart and not check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "server_version": self.server_version, "ok": self.ok,
            "checks": [check.to_json() for check in self.checks],
            "statements": self.statements, "needs_restart": self.needs_restart,
            "can_apply": self.can_apply, "problems": self.problems, "archiver": self.archiver,
        }  # fmt: skip


def _connect(source: PostgresSource) -> psycopg.Connection[tuple[Any, ...]]:
    location = source.location
    try:
        return psycopg.connect(
            location.conninfo(location.dbname or "postgres"),
            password=location.password, autocommit=True, connect_timeout=30,
        )  # fmt: skip
    except psycopg.Error as err:
        raise PitrError(f"cannot connect to {location.redacted}: {str(err).strip()}") from None


def check_server(source: PostgresSource, archive_command: str, rpo: timedelta) -> SetupReport:
    """Read the server's settings and rights; change nothing."""
    timeout = archive_timeout_for(rpo)
    with _connect(source) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', "
                "'archive_mode', 'archive_command', 'archive_timeout', 'max_wal_senders', "
                "'server_version_num', 'server_version')"
            ).fetchall()
        )
        rights = conn.execute(
            "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        archiver = conn.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
            "last_failed_wal, last_failed_time FROM pg_stat_archiver"
        ).fetchone()
    superuser, replication = (bool(rights[0]), bool(rights[1])) if rights else (False, False)
    version = int(settings.get("server_version_num") or 0)
    checks = [
        SettingCheck("wal_level", settings.get("wal_level", ""), "replica",
                     settings.get("wal_level") in ("replica", "logical"), needs_restart=True),
        SettingCheck("archive_mode", settings.get("archive_mode", ""), "on",
                     settings.get("archive_mode") in ("on", "always"), needs_restart=True),
        SettingCheck("archive_command", settings.get("archive_command", ""), archive_command,
                     settings.get("archive_command") == archive_command),
        SettingCheck("archive_timeout", settings.get("archive_timeout", ""), str(timeout),
                     0 < int(settings.get("archive_timeout") or 0) <= timeout),
        SettingCheck("max_wal_senders", settings.get("max_wal_senders", ""), "at least 2",
                     int(settings.get("max_wal_senders") or 0) >= 2, needs_restart=True),
    ]  # fmt: skip
    statements = []
    for check in checks:
        if check.ok:
            continue
        wanted = "10" if check.name == "max_wal_senders" else check.wanted
        statements.append(
            sql.SQL("ALTER SYSTEM SET {} = {}")
            .format(sql.Identifier(check.name), sql.Literal(wanted))
            .as_string(None)
        )
    if statements:
        statements.append("SELECT pg_reload_conf()")
    problems = []
    if version and version < 120000:
        problems.append(f"PostgreSQL {settings.get('server_version')}: 12 or newer is needed")
    if not (superuser or replication):
        problems.append(
            "the source's user has no REPLICATION right: base backups (pg_basebackup) need it "
            "(ALTER ROLE … REPLICATION, and a `replication` line in pg_hba.conf)"
        )
    facts = {}
    if archiver is not None:
        names = ["archived_count", "last_archived_wal", "last_archived_time", "failed_count",
                 "last_failed_wal", "last_failed_time"]  # fmt: skip
        facts = {key: (str(value) if value is not None else None) for key, value in
                 zip(names, archiver, strict=True)}  # fmt: skip
    return SetupReport(
        str(settings.get("server_version", "")), checks, statements, superuser, problems, facts
    )


def apply_settings(source: PostgresSource, report: SetupReport) -> None:
    """Run the report's statements (ALTER SYSTEM needs a superuser)."""
    if not report.can_apply:
        raise PitrError(
            "the source's user may not run ALTER SYSTEM (it is not a superuser)",
            hint="run the printed statements as a superuser (psql -U postgres)",
        )
    with _connect(source) as conn:
        for statement in report.statements:
            conn.execute(statement.encode())
