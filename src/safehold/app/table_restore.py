"""`safehold restore SNAPSHOT --source db --table T [--table T2] --into URL`: one or several
tables of a database snapshot into a target database.

PostgreSQL: only the chosen tables' entries of the snapshot's dump (its table of contents)
are restored into the target, with no scratch server (`sources.table_restore`).
MariaDB/MySQL and SQLite: the snapshot is restored into scratch first (`dbdiff.scratch_copy`:
a throwaway server, or a temp file for SQLite), then only the chosen tables are copied into
the target. A target that already has one of the tables is
refused before anything is written. A target that is the source's live database is
refused unless `to_production` and `yes` (the restore guard of `app.restore`); then an
evidence snapshot of the source is taken first, and still no existing table is touched.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from safehold.app.dbdiff import DB_KINDS, Progress, database_source_name, scratch_copy
from safehold.app.plan_backup import Redact
from safehold.app.restore import find_plan_snapshot, production_write_refusal, take_evidence
from safehold.errors import SafeholdError, UsageError
from safehold.plan.models import Plan
from safehold.repo.dump import dump_file
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import RestoreReport, Source
from safehold.sources.dbtools import restore_plan
from safehold.sources.from_plan import build_source
from safehold.sources.mysql import MyLocation, MysqlSource
from safehold.sources.postgres import PgLocation, PostgresSource
from safehold.sources.rowdiff import table_selected
from safehold.sources.rowdiff_my import catalog as my_catalog
from safehold.sources.rowdiff_my import connect_scratch as my_connect
from safehold.sources.rowdiff_sqlite import catalog as sqlite_catalog
from safehold.sources.rowdiff_sqlite import open_file as sqlite_open
from safehold.sources.sqlite import SqliteSource
from safehold.sources.table_restore import my_copy_tables, pg_restore_tables, sqlite_copy_tables


@dataclass(frozen=True)
class TableRestorePlan:
    snapshot_id: str
    snapshot_name: str | None
    snapshot_time: str
    source_name: str
    kind: str
    tables: tuple[str, ...]
    target: str  # as given (may hold a password: redact before showing)
    production: bool = False
    evidence_note: str = ""
    refusal: SafeholdError | None = None
    app: str = ""
    env: str = ""
    snapshot: Snapshot = field(repr=False, compare=False, kw_only=True)
    source: Source = field(repr=False, compare=False, kw_only=True)

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def plan_table_restore(
    repo: Repository,
    plan: Plan,
    ref: str,
    target: str,
    *,
    source_name: str | None,
    tables: Collection[str],
    to_production: bool = False,
    yes: bool = False,
    reason: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> TableRestorePlan:
    if not tables:
        raise UsageError("name the table(s) to restore with --table")
    source_name = database_source_name(plan, source_name)
    config = plan.source(source_name)
    if config.type not in DB_KINDS:
        raise UsageError(
            f"--table restores tables of a database source; {source_name} is a "
            f"{config.type} source",
            hint="drop --table",
        )
    source = build_source(config, plan, environ=environ)
    snapshot = find_plan_snapshot(
        repo, ref, app=plan.app, env=plan.env, reason=reason, source=source_name
    )
    production = source.is_production_target(target)
    refusal = None
    if production and not (to_production and yes):
        refusal = production_write_refusal(
            source,
            f"refusing to restore table(s) of source {source.name} into its production "
            f"location {source.production_location()}",
            "restore into a new database first; to add the table(s) to production on purpose "
            "add --to-production --yes (an evidence snapshot is taken first; existing tables "
            "are never touched)",
        )
    return TableRestorePlan(
        snapshot.id,
        snapshot.name,
        format_time(snapshot.time),
        source_name,
        config.type,
        tuple(tables),
        target,
        production,
        f"before table restore of {snapshot.short_id}",
        refusal,
        plan.app,
        plan.env,
        snapshot=snapshot,
        source=source,
    )


def _resolve(wanted: Collection[str], found: Collection[str], what: str) -> list[str]:
    chosen: list[str] = []
    for name in wanted:
        matches = [t for t in found if table_selected(t, [name])]
        if not matches:
            raise UsageError(
                f"no table {name} in {what}",
                hint=f"it has: {', '.join(sorted(found)) or 'no tables'}",
            )
        if len(matches) > 1:
            raise UsageError(
                f"table {name} is ambiguous in {what}: {', '.join(matches)}",
                hint="name it with its schema, e.g. public.orders",
            )
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def execute_table_restore(
    repo: Repository,
    plan: TableRestorePlan,
    *,
    progress: Progress | None = None,
    redact: Redact = lambda text: text,
    on_evidence: Callable[[Snapshot], None] | None = None,
) -> RestoreReport:
    if plan.refusal is not None:
        raise plan.refusal
    started = time.monotonic()
    source = plan.source
    what = f"snapshot {plan.snapshot_id[:8]} of {plan.source_name}"
    say = progress or (lambda _text: None)
    manifest = plan.snapshot.safehold["sources"][source.name]
    databases = manifest.get("databases") or {}

    def evidence_first() -> None:
        if plan.production:
            say(f"taking an evidence snapshot of {source.name}")
            evidence = take_evidence(
                repo, source, app=plan.app, env=plan.env, note=plan.evidence_note,
                redact=redact, nothing_done="nothing was restored",
            )  # fmt: skip
            if on_evidence is not None:
                on_evidence(evidence)

    src_db = ""
    if isinstance(source, PostgresSource):  # straight from the dump's table of contents
        target = PgLocation.parse(plan.target)
        src_db = restore_plan(sorted(databases), target.dbname or "?", target.source_db)[0][0]
        from_snapshot = _resolve(plan.tables, databases[src_db].get("tables") or {}, what)
        evidence_first()
        with tempfile.NamedTemporaryFile(prefix="safehold-pg-", suffix=".pgdump") as handle:
            say(f"reading the dump of {src_db} from snapshot {plan.snapshot.short_id}")
            dump_file(repo, plan.snapshot, f"/{source.name}/{databases[src_db]['file']}",
                      cast(BinaryIO, handle))  # fmt: skip
            handle.flush()
            say(f"restoring {', '.join(from_snapshot)} from its table of contents")
            report = pg_restore_tables(source, Path(handle.name), target, from_snapshot)
    else:
        with scratch_copy(
            repo, plan.snapshot, source, app=plan.app, env=plan.env, progress=progress
        ) as copy:
            evidence_first()
            if isinstance(source, SqliteSource):
                assert copy.file is not None
                conn = sqlite_open(copy.file)
                try:
                    from_snapshot = _resolve(plan.tables, sqlite_catalog(conn, "main"), what)
                finally:
                    conn.close()
                report = sqlite_copy_tables(
                    source.name, copy.file, Path(os.path.abspath(plan.target)), from_snapshot
                )
            else:
                assert isinstance(source, MysqlSource) and copy.server is not None
                my_target = MyLocation.parse(plan.target)
                src_db = restore_plan(sorted(databases), my_target.dbname or "?",
                                      my_target.source_db)[0][0]  # fmt: skip
                my_scratch = MyLocation.parse(copy.server.target_url(src_db))
                my_conn = my_connect(my_scratch, src_db)
                try:
                    from_snapshot = _resolve(plan.tables, my_catalog(my_conn), what)
                finally:
                    my_conn.close()
                report = my_copy_tables(source, my_scratch, src_db, my_target, from_snapshot)
    report.target = redact(report.target)
    report.seconds = time.monotonic() - started
    expected = manifest.get("tables") or {}
    if not isinstance(source, SqliteSource):
        expected = databases.get(src_db, {}).get("tables") or {}
    verified = True
    for table, rows in report.details["tables"].items():
        backup = expected.get(table)
        if backup is None or backup == rows:
            report.summary.append(f"{table}: {rows:,} rows (matches backup)")
            continue
        verified = False
        line = f"{table}: {rows:,} rows (backup had {backup:,})"
        report.summary.append(line)
        report.warnings.append(line)
    report.details["verified"] = verified
    return report
