"""`safehold db diff` and `safehold db recover`: the row-level difference between a snapshot
and the live database, and the copy-back of the rows the live database lost.

Both restore the snapshot's dump into a scratch database first (a throwaway server of the
same kind started from the local binaries, or a temp file for SQLite; never production),
through the ordinary restore path (`plan_restore`, then `execute_restore`), and compare in
the database engine (`sources.rowdiff`). The scratch server is gone when the call returns.

    plan = plan_db_diff(repo, plan, "latest", source_name="db")
    diff = run_db_diff(repo, plan)             # -> DbDiff (to_json())

    plan = plan_db_recover(repo, plan, "latest", source_name="db", yes=True)
    result = execute_db_recover(repo, plan)    # -> DbRecover (to_json())

`execute_db_recover` writes into the live database: it is refused without `yes` (unless
`dry_run`), lists conflicts and writes nothing unless `skip_conflicts`, takes a held evidence
snapshot of the source before the first write, writes every table in ONE transaction per
database in foreign-key order, never deletes a row, moves sequences past the restored ids,
and finally checks the recovered tables (`after`: their rows still missing, 0 when done)
without diffing twice: the rows that were missing are looked up by primary key on live (a
table without a primary key is compared again).

Speed (PostgreSQL): the scratch server starts while the dumps come out of the repository;
the scratch copy holds only what the comparison reads (tables, their data, of the `--table`
tables only when named, and primary keys: no secondary index, foreign key or trigger is
built); the live and the scratch server hash their rows at the same time; one hash full
join per table finds the missing, added and changed keys.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.app.plan_backup import Redact
from safehold.app.restore import (
    execute_restore,
    find_plan_snapshot,
    plan_restore,
    production_write_refusal,
    restore_source,
    take_evidence,
)
from safehold.errors import SafeholdError, UsageError
from safehold.plan.models import Plan
from safehold.repo.dump import dump_file
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import AccountOptions, Source
from safehold.sources.from_plan import build_source
from safehold.sources.mysql import MyLocation, MysqlSource
from safehold.sources.postgres import DUMP_SUFFIX, PgLocation, PostgresSource
from safehold.sources.rowdiff import (
    RecoverStep,
    RowEngine,
    TableDiff,
    TableInfo,
    diff_table,
    execute_recover,
    missing_after,
    plan_recover,
    table_selected,
)
from safehold.sources.rowdiff_my import MyRowEngine
from safehold.sources.rowdiff_pg import PgRowEngine
from safehold.sources.rowdiff_sqlite import SqliteRowEngine
from safehold.sources.scratch import ScratchRoot, ThrowawayMariadb, ThrowawayPostgres
from safehold.sources.sqlite import SqliteSource
from safehold.sources.table_restore import pg_restore_for_compare

DB_KINDS = ("postgres", "mysql", "sqlite")
COMPARE_RESTORE_JOBS = 2  # tables a scratch copy loads at once (pg_restore --jobs)
KEEP, RESTORE = "keep", "restore"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DbDiffPlan:
    """What `run_db_diff` compares: which snapshot, which source, which tables."""

    snapshot_id: str
    snapshot_name: str | None
    snapshot_time: str
    source_name: str
    kind: str
    databases: tuple[str, ...]  # "" for SQLite
    tables: tuple[str, ...] = ()  # only these (`--table`); () = all
    samples: int = 5
    app: str = ""
    env: str = ""
    snapshot: Snapshot = field(repr=False, compare=False, kw_only=True)
    source: Source = field(repr=False, compare=False, kw_only=True)


@dataclass
class DbDiff:
    """The row-level difference, per table."""

    snapshot_id: str
    snapshot_name: str | None
    snapshot_time: str
    source: str
    kind: str
    tables: list[TableDiff]
    seconds: float = 0.0
    scratch: str = ""

    @property
    def missing(self) -> int:
        return sum(t.missing for t in self.tables)

    @property
    def added(self) -> int:
        return sum(t.added for t in self.tables)

    @property
    def changed(self) -> int:
        return sum(t.changed or 0 for t in self.tables)

    def table(self, name: str) -> TableDiff:
        for table in self.tables:
            if table_selected(table.table, [name]):
                return table
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": {
                "id": self.snapshot_id,
                "name": self.snapshot_name,
                "time": self.snapshot_time,
            },
            "source": self.source,
            "type": self.kind,
            "seconds": round(self.seconds, 3),
            "scratch": self.scratch,
            "totals": {"missing": self.missing, "added": self.added, "changed": self.changed},
            "tables": [t.to_json() for t in self.tables],
        }


@dataclass(frozen=True)
class DbRecoverPlan:
    """What `execute_db_recover` does; `refusal` says why it may not write (None: it may)."""

    diff: DbDiffPlan
    changed: str = KEEP  # "keep": leave changed rows as they are; "restore": old values back
    skip_conflicts: bool = False
    dry_run: bool = False
    refusal: SafeholdError | None = None
    evidence_note: str = ""


@dataclass
class DbRecover:
    """What a recovery wrote (or, with dry_run, would write)."""

    diff: DbDiff
    steps: list[RecoverStep]
    changed: str
    dry_run: bool
    written: bool = False
    evidence_id: str | None = None
    evidence_name: str | None = None
    after: dict[str, int] = field(default_factory=dict)  # table -> rows still missing
    seconds: float = 0.0

    @property
    def conflicts(self) -> int:
        return sum(len(s.conflicts) for s in self.steps)

    @property
    def inserted(self) -> int:
        return sum(s.inserts for s in self.steps)

    @property
    def updated(self) -> int:
        return sum(s.updates for s in self.steps)

    @property
    def blocked(self) -> bool:
        """Nothing was written because of conflicts (no --skip-conflicts)."""
        return not self.dry_run and not self.written and self.conflicts > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.diff.to_json()["snapshot"],
            "source": self.diff.source,
            "type": self.diff.kind,
            "dry_run": self.dry_run,
            "written": self.written,
            "changed": self.changed,
            "evidence": (
                {"id": self.evidence_id, "name": self.evidence_name} if self.evidence_id else None
            ),
            "inserted": self.inserted,
            "updated": self.updated,
            "conflicts": self.conflicts,
            "steps": [s.to_json() for s in self.steps],
            "after": {"missing": dict(self.after)},
            "diff": self.diff.to_json(),
            "seconds": round(self.seconds, 3),
        }


# ----- planning ---------------------------------------------------------------------------------


def database_source_name(plan: Plan, source_name: str | None) -> str:
    """The named source, or the plan's one database source when none is named."""
    if source_name is not None:
        return source_name
    names = [s.name for s in plan.sources if s.type in DB_KINDS]
    if len(names) != 1:
        raise UsageError(
            "which database source?", hint=f"add --source NAME ({', '.join(names) or 'none'})"
        )
    return names[0]


def plan_db_diff(
    repo: Repository,
    plan: Plan,
    ref: str,
    *,
    source_name: str | None = None,
    tables: Collection[str] = (),
    samples: int = 5,
    reason: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> DbDiffPlan:
    """Resolve the snapshot (`latest`: the newest good backup of the source) and the
    database source. Raises UsageError for a source that is not a database or is not in
    the snapshot."""
    source_name = database_source_name(plan, source_name)
    config = plan.source(source_name)
    if config.type not in DB_KINDS:
        raise UsageError(
            f"source {source_name} is a {config.type} source, not a database",
            hint="db diff compares PostgreSQL, MySQL/MariaDB and SQLite sources",
        )
    if samples < 0:
        raise UsageError("--samples must be 0 or more")
    source = build_source(config, plan, environ=environ)
    snapshot = find_plan_snapshot(
        repo, ref, app=plan.app, env=plan.env, reason=reason, source=source_name
    )
    manifest = (snapshot.safehold.get("sources") or {}).get(source_name)
    if not manifest:
        raise UsageError(
            f"snapshot {snapshot.short_id} has no source {source_name!r}",
            hint="pick a snapshot that holds it: `safehold snapshots`",
        )
    if manifest.get("failed"):
        raise UsageError(
            f"source {source_name} failed in snapshot {snapshot.short_id}",
            hint="pick an earlier snapshot: `safehold snapshots`",
        )
    databases: tuple[str, ...] = ("",)
    if config.type != "sqlite":
        databases = tuple(sorted(manifest.get("databases") or {}))
    return DbDiffPlan(
        snapshot.id,
        snapshot.name,
        format_time(snapshot.time),
        source_name,
        config.type,
        databases,
        tuple(tables),
        samples,
        plan.app,
        plan.env,
        snapshot=snapshot,
        source=source,
    )


def plan_db_recover(
    repo: Repository,
    plan: Plan,
    ref: str,
    *,
    source_name: str | None = None,
    tables: Collection[str] = (),
    changed: str = KEEP,
    skip_conflicts: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    reason: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> DbRecoverPlan:
    """Plan a recovery. Writing into the live database is refused without `yes` (a dry run
    needs none)."""
    if changed not in (KEEP, RESTORE):
        raise UsageError(f"--changed {changed}: say keep or restore")
    diff = plan_db_diff(
        repo,
        plan,
        ref,
        source_name=source_name,
        tables=tables,
        samples=5,
        reason=reason,
        environ=environ,
    )
    refusal = None
    if not dry_run and not yes:
        refusal = production_write_refusal(
            diff.source,
            f"refusing to write recovered rows into the live database of source "
            f"{diff.source_name} ({diff.source.production_location()})",
            "look first with --dry-run; then add --yes (an evidence snapshot is taken "
            "before the first write)",
        )
    note = f"before db recover from {diff.snapshot_id[:8]}"
    return DbRecoverPlan(diff, changed, skip_conflicts, dry_run, refusal, note)


# ----- the scratch copy -------------------------------------------------------------------------


@dataclass
class ScratchCopy:
    """A snapshot's database restored where nothing is production: a throwaway server of
    the source's kind (`server`) or, for SQLite, a file in a private temp folder (`file`)."""

    description: str
    server: ThrowawayPostgres | ThrowawayMariadb | None = None
    file: Path | None = None


@contextlib.contextmanager
def scratch_copy(
    repo: Repository, snapshot: Snapshot, source: Source, *, app: str, env: str,
    progress: Progress | None = None, compare: Collection[str] | None = None,
) -> Iterator[ScratchCopy]:  # fmt: skip
    """Restore `source` from `snapshot` into scratch (plan_restore, then execute_restore);
    everything is removed when the block ends. `compare` (PostgreSQL): the copy is only
    compared against, so only what a comparison reads is restored (`_compare_copy`), the
    rows of these tables alone when any are named."""
    say = progress or (lambda _text: None)
    root = ScratchRoot()
    try:
        if isinstance(source, SqliteSource):
            copy = root.folder("sqlite") / source.path.name
            say(f"restoring {source.name} from snapshot {snapshot.short_id} into a scratch copy")
            restore_source(repo, snapshot, source, str(copy))
            yield ScratchCopy("a scratch copy of the SQLite file", file=copy)
            return
        server: ThrowawayPostgres | ThrowawayMariadb
        if isinstance(source, PostgresSource):
            server = ThrowawayPostgres(root)
        elif isinstance(source, MysqlSource):
            server = ThrowawayMariadb(root)
        else:
            raise UsageError(f"source {source.name} is not a database")
        say(f"starting a {server.describe()}")
        if isinstance(server, ThrowawayPostgres) and compare is not None:
            assert isinstance(source, PostgresSource)
            _compare_copy(repo, snapshot, source, server, root, tuple(compare), say)
            yield ScratchCopy(server.describe(), server=server)
            return
        server.start()
        restore_plan = plan_restore(
            repo, snapshot, source, server.target_url(""), app=app, env=env,
            accounts=AccountOptions(roles=False, owners=False),
        )  # fmt: skip
        if restore_plan.refusal is not None:  # never: the scratch server is not production
            raise restore_plan.refusal
        say(f"restoring {source.name} from snapshot {snapshot.short_id} into it")
        execute_restore(repo, restore_plan)
        yield ScratchCopy(server.describe(), server=server)
    finally:
        root.close()


def _compare_copy(
    repo: Repository,
    snapshot: Snapshot,
    source: PostgresSource,
    server: ThrowawayPostgres,
    root: ScratchRoot,
    tables: tuple[str, ...],
    say: Progress,
) -> None:
    """A PostgreSQL snapshot restored to be compared against: the scratch server starts
    (initdb) while the dumps come out of the repository, then each dump is restored with
    only the tables, their data and their primary keys (no secondary index, foreign key or
    trigger: `pg_restore_for_compare`), two tables at a time."""
    manifest = (snapshot.safehold.get("sources") or {}).get(source.name) or {}
    databases: dict[str, dict[str, Any]] = manifest.get("databases") or {}
    folder = root.folder("dumps")
    dumps: dict[str, Path] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="safehold-scratch") as pool:
        started = pool.submit(server.start)
        try:
            with repo.locked(exclusive=False):
                for db, info in sorted(databases.items()):
                    dumps[db] = folder / f"{len(dumps)}{DUMP_SUFFIX}"
                    with open(dumps[db], "wb") as out:
                        dump_file(repo, snapshot, f"/{source.name}/{info['file']}", out)
        finally:
            error = started.exception()  # waits: the server's undo is registered either way
        if error is not None:
            raise error
    say(f"restoring {source.name} from snapshot {snapshot.short_id} into it")
    target = PgLocation.parse(server.target_url(""))
    for db, path in dumps.items():
        pg_restore_for_compare(
            source, path, target, db, encoding=databases[db].get("encoding"), tables=tables,
            jobs=COMPARE_RESTORE_JOBS,
        )  # fmt: skip
        path.unlink()


@contextlib.contextmanager
def _engines(
    repo: Repository, plan: DbDiffPlan, progress: Progress, *, writable: bool = False
) -> Iterator[tuple[str, list[tuple[str, RowEngine]]]]:
    """The snapshot restored into scratch, and one engine per database (scratch + live)."""
    engines: list[tuple[str, RowEngine]] = []
    source = plan.source
    with scratch_copy(repo, plan.snapshot, source, app=plan.app, env=plan.env,
                      progress=progress, compare=plan.tables) as copy:  # fmt: skip
        try:
            if isinstance(source, SqliteSource):
                assert copy.file is not None
                engines.append(("", SqliteRowEngine(copy.file, source.path, writable=writable)))
            server = copy.server
            for db in plan.databases if server is not None else ():
                assert server is not None
                url = server.target_url(db)
                if isinstance(source, PostgresSource):
                    engine: RowEngine = PgRowEngine(PgLocation.parse(url), db, source.location, db)
                else:
                    assert isinstance(source, MysqlSource)
                    engine = MyRowEngine(MyLocation.parse(url), db, source.location, db)
                engines.append((db, engine))
            yield copy.description, engines
        finally:
            for _, engine in engines:
                engine.close()


def _label(db: str, table: str, several: bool) -> str:
    return f"{db}:{table}" if several else table


def _compare(
    plan: DbDiffPlan,
    db: str,
    engine: RowEngine,
    progress: Progress,
    only: Collection[str] | None = None,
) -> tuple[list[TableDiff], dict[str, TableInfo], dict[str, TableInfo]]:
    snap_tables = engine.snapshot_tables()
    live_tables = engine.live_tables()
    wanted = list(plan.tables)
    names = [n for n in snap_tables if table_selected(n, wanted)]
    if only is not None:
        names = [n for n in names if n in only]
    several = len(plan.databases) > 1
    diffs: list[TableDiff] = []
    for index, name in enumerate(snap_tables):
        if name not in names:
            continue
        progress(f"comparing {_label(db, name, several)}")
        diffs.append(
            diff_table(
                engine,
                index,
                snap_tables[name],
                live_tables.get(name),
                database=db,
                samples=plan.samples,
            )
        )
    return diffs, snap_tables, live_tables


def _check_tables(plan: DbDiffPlan, found: Collection[str]) -> None:
    unknown = [t for t in plan.tables if not any(table_selected(n, [t]) for n in found)]
    if unknown:
        raise UsageError(
            f"no table {', '.join(unknown)} in snapshot {plan.snapshot_id[:8]} of "
            f"{plan.source_name}",
            hint=f"it has: {', '.join(sorted(found)) or 'no tables'}",
        )


def run_db_diff(repo: Repository, plan: DbDiffPlan, progress: Progress | None = None) -> DbDiff:
    """Restore the snapshot into scratch, compare every (chosen) table with live."""
    say = progress or (lambda _text: None)
    started = time.monotonic()
    tables: list[TableDiff] = []
    found: set[str] = set()
    with _engines(repo, plan, say) as (scratch, engines):
        for db, engine in engines:
            diffs, snap_tables, _ = _compare(plan, db, engine, say)
            found.update(snap_tables)
            tables.extend(diffs)
    _check_tables(plan, found)
    return DbDiff(
        plan.snapshot_id,
        plan.snapshot_name,
        plan.snapshot_time,
        plan.source_name,
        plan.kind,
        tables,
        time.monotonic() - started,
        scratch,
    )


def execute_db_recover(
    repo: Repository,
    plan: DbRecoverPlan,
    *,
    progress: Progress | None = None,
    redact: Redact = lambda text: text,
    on_evidence: Callable[[Snapshot], None] | None = None,
) -> DbRecover:
    """Diff, plan the writes, and (unless dry_run, refused, or blocked by conflicts) take
    the evidence snapshot and write. See the module docstring."""
    if plan.refusal is not None:
        raise plan.refusal
    say = progress or (lambda _text: None)
    started = time.monotonic()
    diff_plan = plan.diff
    restore_changed = plan.changed == RESTORE
    tables: list[TableDiff] = []
    steps: list[RecoverStep] = []
    found: set[str] = set()
    result: DbRecover | None = None
    with _engines(repo, diff_plan, say, writable=not plan.dry_run) as (scratch, engines):
        per_db: list[
            tuple[str, RowEngine, list[RecoverStep], dict[str, TableInfo], list[TableDiff]]
        ] = []
        for db, engine in engines:
            diffs, snap_tables, live_tables = _compare(diff_plan, db, engine, say)
            found.update(snap_tables)
            tables.extend(diffs)
            db_steps = plan_recover(
                engine, diffs, snap_tables, live_tables, restore_changed=restore_changed
            )
            for step in db_steps:
                if step.inserts:
                    step.sequences = engine.fix_sequences(live_tables[step.table], dry_run=True)
            steps.extend(db_steps)
            per_db.append((db, engine, db_steps, live_tables, diffs))
        _check_tables(diff_plan, found)
        diff = DbDiff(
            diff_plan.snapshot_id,
            diff_plan.snapshot_name,
            diff_plan.snapshot_time,
            diff_plan.source_name,
            diff_plan.kind,
            tables,
            0.0,
            scratch,
        )
        result = DbRecover(diff, steps, plan.changed, plan.dry_run)
        missing_tables = [t for t in tables if t.live_rows is None and t.missing]
        if plan.dry_run or (result.conflicts and not plan.skip_conflicts):
            result.seconds = time.monotonic() - started
            return result
        if missing_tables:
            raise UsageError(
                f"table {missing_tables[0].table} is not in the live database: rows cannot be "
                "copied back into it",
                hint="bring the whole table back first: safehold restore SNAPSHOT --source "
                f"{diff_plan.source_name} --table {missing_tables[0].table} --into URL",
            )
        if steps:
            say(f"taking an evidence snapshot of {diff_plan.source_name}")
            evidence = take_evidence(
                repo, diff_plan.source, app=diff_plan.app, env=diff_plan.env,
                note=plan.evidence_note, redact=redact,
            )  # fmt: skip
            result.evidence_id, result.evidence_name = evidence.id, evidence.name
            if on_evidence is not None:
                on_evidence(evidence)
        for db, engine, db_steps, live_tables, _diffs in per_db:
            if not db_steps:
                continue
            say(
                f"copying back into {db or diff_plan.source_name}: "
                f"{sum(s.inserts for s in db_steps)} row(s) inserted, "
                f"{sum(s.updates for s in db_steps)} updated"
            )
            execute_recover(engine, db_steps, live_tables, skip_conflicts=plan.skip_conflicts)
        result.written = bool(steps)
        # the check, without a second diff: the rows that were missing are looked up by
        # primary key on live; only a recovered table without one is compared again
        recovered = {s.table for s in steps}
        for db, engine, _, live_tables, diffs in per_db:
            again: list[str] = []
            for table in diffs:
                if table.table not in recovered:
                    continue
                left = missing_after(engine, table, live_tables[table.table])
                if left is None:
                    again.append(table.table)
                else:
                    result.after[_label(db, table.table, len(per_db) > 1)] = left
            if not again:
                continue
            check_plan = DbDiffPlan(
                diff_plan.snapshot_id,
                diff_plan.snapshot_name,
                diff_plan.snapshot_time,
                diff_plan.source_name,
                diff_plan.kind,
                diff_plan.databases,
                diff_plan.tables,
                0,
                snapshot=diff_plan.snapshot,
                source=diff_plan.source,
            )
            for table in _compare(check_plan, db, engine, say, only=again)[0]:
                result.after[_label(db, table.table, len(per_db) > 1)] = table.missing
    result.seconds = time.monotonic() - started
    return result
