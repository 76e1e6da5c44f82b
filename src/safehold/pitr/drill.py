"""The point-in-time part of a drill: recover a `pitr = "wal"` source to a moment a few
minutes ago (`[drill] pitr_at`, default -5m) in a throwaway server, find the newest dated row,
and measure the RPO reached: how far before the target moment the newest recovered row is.

The row must be at or before the target (a row after it means recovery went too far: FAIL);
more than the RPO before it is a warning (the app may simply not have written meanwhile).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from safehold.pitr.errors import OutsideWindowError
from safehold.pitr.recover import RecoveryTarget
from safehold.pitr.restore import (
    parse_at,
    plan_pitr_restore,
    recover_in_scratch,
    recovery_user,
    show_time,
)
from safehold.plan.models import Plan, PostgresConfig
from safehold.repo.repository import Repository
from safehold.sources.postgres import PostgresSource
from safehold.sources.scratch import ScratchRoot

DEFAULT_AT = "-5m"


@dataclass
class PitrDrillResult:
    source: str
    target: datetime
    base_backup: str = ""
    seconds: float = 0.0
    newest: str = ""  # "db.table.column"
    newest_value: datetime | None = None
    rpo_measured_s: float | None = None  # target - newest row
    ok: bool = False
    warning: bool = False
    detail: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target.isoformat(),
            "base_backup": self.base_backup, "seconds": round(self.seconds, 3),
            "newest": self.newest,
            "newest_value": self.newest_value.isoformat() if self.newest_value else None,
            "rpo_measured_s": self.rpo_measured_s, "ok": self.ok, "warning": self.warning,
            "detail": self.detail,
        }  # fmt: skip


def _newest_row(conninfo: str, columns: list[str]) -> tuple[str, datetime] | None:
    """The newest value of any timestamptz/timestamp column named in `columns`."""
    best: tuple[str, datetime] | None = None
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM "
            "information_schema.columns WHERE column_name = ANY(%s) AND data_type LIKE "
            "'timestamp%%' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
            (columns,),
        ).fetchall()
        for schema, table, column, kind in found:
            query = sql.SQL("SELECT max({}) FROM {}.{}").format(
                sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            value = row[0] if row else None
            if not isinstance(value, datetime):
                continue
            if value.tzinfo is None or "without" in kind:
                value = value.replace(tzinfo=UTC)
            if best is None or value > best[1]:
                best = (f"{table}.{column}", value)
    return best


def drill_pitr(
    repo: Repository,
    plan: Plan,
    config: PostgresConfig,
    at: str,
    columns: list[str],
    root: ScratchRoot,
    now: datetime | None = None,
    environ: Mapping[str, str] = os.environ,
) -> PitrDrillResult:
    """Recover `config` to `at` (relative to now) in a scratch server inside `root`."""
    started = time.monotonic()
    moment = parse_at(at, now or datetime.now(UTC))
    result = PitrDrillResult(config.name, moment)
    target = RecoveryTarget(time=moment)
    note = ""
    try:
        pitr = plan_pitr_restore(repo, plan, config.name, "", target, scratch_only=True)
    except OutsideWindowError:
        # Past the newest archived WAL (a quiet server writes none): PostgreSQL would stop
        # with "recovery ended before the target"; recover to the end of the archive instead
        # and measure against the moment asked for.
        pitr = plan_pitr_restore(repo, plan, config.name, "", RecoveryTarget(), scratch_only=True)
        if pitr.window.end > moment.timestamp() or pitr.window.start > moment.timestamp():
            raise
        note = f" (the archive ends at {show_time(pitr.window.end)}: recovered to its end)"
    result.base_backup = pitr.base.label
    server = recover_in_scratch(repo, pitr, root)
    source = PostgresSource(config.name, config.url, config.database_names() or None)
    user = recovery_user(source, environ)
    rpo = (config.rpo or plan.targets.rpo).total_seconds()
    newest: tuple[str, datetime] | None = None
    for database in config.database_names() or ["postgres"]:
        found = _newest_row(server.socket_conninfo(user, database), columns)
        if found and (newest is None or found[1] > newest[1]):
            newest = (f"{database}.{found[0]}", found[1])
    result.seconds = time.monotonic() - started
    if newest is None:
        result.ok, result.warning = True, True
        result.detail = (
            f"recovered to {show_time(moment.timestamp())} from {pitr.base.label}; no dated "
            f"column ({', '.join(columns)}): RPO not measured{note}"
        )
        return result
    result.newest, result.newest_value = newest
    gap = (moment - newest[1]).total_seconds()
    result.rpo_measured_s = round(gap, 3)
    result.detail = (
        f"recovered to {show_time(moment.timestamp())} from {pitr.base.label}: newest row "
        f"{newest[0]} = {newest[1].isoformat(timespec='seconds')}, {gap:.1f} s before it" + note
    )
    if gap < 0:
        result.detail += " (AFTER the target: recovery went too far)"
        return result
    result.ok = True
    if gap > rpo:
        result.warning = True
        result.detail += f" (more than the RPO of {rpo:.0f} s: is the app writing?)"
    return result
