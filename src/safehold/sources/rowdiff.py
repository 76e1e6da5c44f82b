"""Row-level difference between a restored snapshot copy of a database and the live one, and
the copy-back of the rows the live database lost.

The snapshot copy lives in a scratch database (never production). Everything heavy happens in
that scratch database engine:

1. per table, the live database sends only the key columns and one hash of the row (over the
   columns both sides have) into a work table of the scratch database (PostgreSQL: COPY;
   MySQL/MariaDB: a streaming cursor; SQLite: the live file ATTACHed read-only);
2. the scratch database hashes the snapshot rows the same way and joins the two by primary
   key: rows missing from live, rows added since, rows whose hash differs (changed);
3. only the changed rows are then fetched in full from live, to name the changed columns.
Tables without a primary key are compared as multisets of whole-row hashes (missing and added
counts; "changed" cannot be told) and say so.

`RowEngine` is what each engine provides (rowdiff_pg, rowdiff_my, rowdiff_sqlite); the
comparison (`diff_table`), the recovery plan (`plan_recover`) and its execution
(`execute_recover`) are written once, here, over DB-API connections.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from safehold.sources.dbtools import DatabaseError

BATCH = 1000  # keys per IN (...) lookup on the live database
WORK_PREFIX = "safehold_w"


class RowDiffError(DatabaseError):
    """The row-level comparison or the copy-back could not be done."""

    default_hint = "check that the live database answers and the snapshot restores"


@dataclass(frozen=True)
class TableInfo:
    """A table as the catalog of one side describes it."""

    name: str  # display name: "public.orders" (PostgreSQL), "orders" (MySQL, SQLite)
    ref: str  # its quoted SQL name in that database
    columns: tuple[str, ...]
    types: tuple[str, ...] = ()  # the engine's type of each column (PostgreSQL), else ""
    primary_key: tuple[str, ...] = ()
    unique_keys: tuple[tuple[str, ...], ...] = ()  # unique constraints/indexes besides the pk
    parents: tuple[str, ...] = ()  # display names of the tables its foreign keys reference
    serials: tuple[str, ...] = ()  # columns fed by a sequence / AUTO_INCREMENT / AUTOINCREMENT


@dataclass
class TableDiff:
    """One table: the snapshot against live."""

    table: str
    database: str
    compared_by: str  # "primary key" | "whole-row hash"
    key: list[str]
    snapshot_rows: int
    live_rows: int | None  # None: the table is not in the live database
    missing: int  # in the snapshot, not in live
    added: int  # in live, not in the snapshot
    changed: int | None  # same key, other values; None: no primary key, cannot tell
    changed_columns: dict[str, int] = field(default_factory=dict)  # column -> rows changed
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # for the recovery, not shown
    work: str = field(default="", repr=False)
    columns: tuple[str, ...] = field(default=(), repr=False)

    @property
    def differs(self) -> bool:
        return bool(self.missing or self.added or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "database": self.database,
            "compared_by": self.compared_by,
            "key": self.key,
            "snapshot_rows": self.snapshot_rows,
            "live_rows": self.live_rows,
            "missing": self.missing,
            "added": self.added,
            "changed": self.changed,
            "changed_columns": dict(self.changed_columns),
            "samples": {kind: [dict(row) for row in rows] for kind, rows in self.samples.items()},
            "notes": list(self.notes),
        }


@dataclass
class Conflict:
    """A row the recovery would write whose unique key a row of live now holds."""

    table: str
    key: dict[str, Any]  # the snapshot row's primary key (or its values without one)
    unique_key: list[str]
    values: list[Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "unique_key": self.unique_key,
            "values": self.values,
        }

    def describe(self) -> str:
        key = ", ".join(f"{k}={v!r}" for k, v in self.key.items())
        taken = ", ".join(f"{c}={v!r}" for c, v in zip(self.unique_key, self.values, strict=True))
        return f"{self.table} ({key}): {taken} is now taken by another row"


@dataclass
class RecoverStep:
    """What the recovery writes into one live table."""

    table: str
    inserts: int
    updates: int
    statements: list[str]  # the SQL, as it runs (values as placeholders)
    conflicts: list[Conflict] = field(default_factory=list)
    skipped: int = 0  # rows left out because of conflicts (--skip-conflicts)
    sequences: list[str] = field(default_factory=list)  # filled in after the writes
    # what execution writes
    insert_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    update_rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    columns: tuple[str, ...] = field(default=(), repr=False)
    key: tuple[str, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "inserts": self.inserts,
            "updates": self.updates,
            "skipped": self.skipped,
            "statements": list(self.statements),
            "sequences": list(self.sequences),
            "conflicts": [c.to_json() for c in self.conflicts],
        }


def jsonable(value: Any) -> Any:
    """A sample value as JSON can hold it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "\\x" + raw.hex()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time | datetime.datetime):
        return value.isoformat()
    return str(value)


def fk_order(tables: Sequence[TableInfo]) -> list[TableInfo]:
    """Parents before children (foreign keys among `tables`); a cycle keeps the given order."""
    names = {t.name for t in tables}
    done: list[TableInfo] = []
    placed: set[str] = set()
    pending = list(tables)
    while pending:
        progress = False
        for table in list(pending):
            parents = {p for p in table.parents if p in names and p != table.name}
            if parents <= placed:
                done.append(table)
                placed.add(table.name)
                pending.remove(table)
                progress = True
        if not progress:  # a cycle: the rest in the given order
            done.extend(pending)
            break
    return done


def _batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RowEngine(ABC):
    """One database engine: the scratch (work) connection holding the snapshot copy and the
    work tables, the live connection, and the SQL dialect between them."""

    kind: str = ""
    param = "%s"  # DB-API placeholder

    work: Any  # DB-API connection to the snapshot copy (work tables go there too)
    live: Any  # DB-API connection to the live database (autocommit until a recovery)
    side: Any = None  # a second connection to the snapshot copy (None: the engine has none)

    # ----- dialect -------------------------------------------------------------------------

    @abstractmethod
    def quote(self, name: str) -> str: ...

    @abstractmethod
    def work_ref(self, name: str) -> str:
        """The quoted name of a work table in the scratch database."""

    full_join = False  # FULL OUTER JOIN: the keyed compare in one pass (else NOT EXISTS)

    @abstractmethod
    def hash_expr(self, alias: str, columns: Sequence[str], *, multiset: bool = False) -> str:
        """One hash of the columns of a row (NULL-safe, unambiguous), the same on both sides.
        `multiset`: for a table without a primary key, where rows are told apart by their
        hash alone (an engine may use a cheaper hash when rows are matched by key first)."""

    @abstractmethod
    def distinct(self, left: str, right: str) -> str:
        """SQL that is true when two values differ (NULL-safe)."""

    def read(self, expr: str) -> str:
        """A column as it is read into Python (PostgreSQL: as text, written back as text)."""
        return expr

    def sample(self, expr: str) -> str:
        """A column as it is shown in a sample row (the driver's own Python type)."""
        return expr

    # ----- catalog -------------------------------------------------------------------------

    @abstractmethod
    def snapshot_tables(self) -> dict[str, TableInfo]: ...

    @abstractmethod
    def live_tables(self) -> dict[str, TableInfo]: ...

    # ----- data movement -------------------------------------------------------------------

    def work_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return _run_sql(self.work, query, params)

    def live_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return _run_sql(self.live, query, params)

    def drop_work(self, name: str) -> None:
        self.work_sql(f"DROP TABLE IF EXISTS {self.work_ref(name)}")

    def create_sql(self, name: str, select: str) -> str:
        return f"CREATE TABLE {self.work_ref(name)} AS {select}"

    def create_work(self, name: str, select: str) -> None:
        self.drop_work(name)
        self.work_sql(self.create_sql(name, select))

    def side_by_side(self, job: Callable[[], None], name: str, select: str) -> None:
        """Run `job` (a pull from live into the work database) and create the work table
        `name` from `select` at the same time: the table on the second scratch connection
        (`side`), so that the live server and the scratch server hash at once. Without a
        second connection (SQLite: one file, one writer) one after the other."""
        self.drop_work(name)
        if self.side is None:
            job()
            self.work_sql(self.create_sql(name, select))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="safehold-rowdiff") as pool:
            created = pool.submit(_run_sql, self.side, self.create_sql(name, select), ())
            try:
                job()
            finally:
                error = created.exception()  # waits: the side statement always finishes
            if error is not None:
                raise RowDiffError(f"hashing the snapshot rows failed: {error}") from None

    def index_work(self, name: str, columns: Sequence[str]) -> None:
        cols = ", ".join(self.quote(c) for c in columns)
        self.work_sql(f"CREATE INDEX {self.quote(name + '_i')} ON {self.work_ref(name)} ({cols})")

    def pull(self, select: str, into: str, width: int) -> None:
        """Run `select` on live and append its rows to the work table `into`."""
        source = self.live.cursor()
        target = self.work.cursor()
        marks = ", ".join([self.param] * width)
        try:
            source.execute(select)
            while True:
                rows = source.fetchmany(5000)
                if not rows:
                    break
                target.executemany(f"INSERT INTO {self.work_ref(into)} VALUES ({marks})", rows)
        finally:
            source.close()
            target.close()

    def key_match(self, columns: Sequence[str], count: int) -> tuple[str, int]:
        """`(k1, k2) IN ((?, ?), ...)` for `count` key tuples; and the placeholders per tuple."""
        if len(columns) == 1:
            return f"{self.quote(columns[0])} IN ({', '.join([self.param] * count)})", 1
        one = "(" + ", ".join([self.param] * len(columns)) + ")"
        cols = ", ".join(self.quote(c) for c in columns)
        return f"({cols}) IN ({', '.join([one] * count)})", len(columns)

    def live_rows(
        self,
        table: TableInfo,
        key: Sequence[str],
        columns: Sequence[str],
        keys: Sequence[tuple[Any, ...]],
        *,
        native: bool = False,
    ) -> list[tuple[Any, ...]]:
        """The live rows (`columns`) whose `key` columns are one of `keys` (`native`: values
        as samples show them, else as `read` gives them)."""
        found: list[tuple[Any, ...]] = []
        cols = ", ".join(self.read(self.quote(c)) for c in columns)
        for batch in _batches(list(keys)):
            condition, _ = self.key_match(key, len(batch))
            params = [value for item in batch for value in item]
            found.extend(self.live_sql(f"SELECT {cols} FROM {table.ref} WHERE {condition}", params))
        return found

    def insert_live(
        self, table: TableInfo, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        cols = ", ".join(self.quote(c) for c in columns)
        marks = ", ".join([self.param] * len(columns))
        cursor = self.live.cursor()
        try:
            for batch in _batches(list(rows), 5000):
                cursor.executemany(f"INSERT INTO {table.ref} ({cols}) VALUES ({marks})", batch)
        finally:
            cursor.close()

    def insert_statement(self, table: TableInfo, columns: Sequence[str]) -> str:
        cols = ", ".join(self.quote(c) for c in columns)
        marks = ", ".join([self.param] * len(columns))
        return f"INSERT INTO {table.ref} ({cols}) VALUES ({marks})"

    def update_statement(self, table: TableInfo, key: Sequence[str], columns: Sequence[str]) -> str:
        sets = ", ".join(f"{self.quote(c)} = {self.param}" for c in columns if c not in key)
        where = " AND ".join(f"{self.quote(k)} = {self.param}" for k in key)
        return f"UPDATE {table.ref} SET {sets} WHERE {where}"

    def update_live(
        self,
        table: TableInfo,
        key: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
    ) -> None:
        """`rows` hold `columns`; each becomes SET (non-key columns) WHERE (key columns)."""
        index = {c: i for i, c in enumerate(columns)}
        values = [c for c in columns if c not in key]
        params = [
            tuple(row[index[c]] for c in values) + tuple(row[index[k]] for k in key) for row in rows
        ]
        cursor = self.live.cursor()
        try:
            cursor.executemany(self.update_statement(table, key, columns), params)
        finally:
            cursor.close()

    @abstractmethod
    def begin_live(self) -> None: ...

    @abstractmethod
    def commit_live(self) -> None: ...

    @abstractmethod
    def rollback_live(self) -> None: ...

    @abstractmethod
    def fix_sequences(self, table: TableInfo, dry_run: bool) -> list[str]:
        """Move the table's sequences / AUTO_INCREMENT past its highest id (inside the live
        transaction where the engine allows; MySQL after it). Returns what it did/would do."""

    def after_commit(self, tables: Sequence[TableInfo]) -> list[str]:
        return []

    def close(self) -> None:
        for conn in (
            getattr(self, "live", None),
            getattr(self, "work", None),
            getattr(self, "side", None),
        ):
            if conn is not None:
                with contextlib.suppress(Exception):  # never hides the real outcome
                    conn.close()


# ----- the comparison ---------------------------------------------------------------------------


def _count(engine: RowEngine, ref: str) -> int:
    rows = engine.work_sql(f"SELECT count(*) FROM {ref}")
    return int(rows[0][0]) if rows else 0


def _on(engine: RowEngine, left: str, right: str, key: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{engine.quote(k)} = {right}.{engine.quote(k)}" for k in key)


def diff_table(
    engine: RowEngine,
    index: int,
    snap: TableInfo,
    live: TableInfo | None,
    *,
    database: str = "",
    samples: int = 5,
) -> TableDiff:
    """Compare one table. Leaves work tables `<prefix><index>_*` behind for `plan_recover`."""
    work = f"{WORK_PREFIX}{index}"
    q = engine.quote
    if live is None:
        total = _count(engine, snap.ref)
        pk = list(snap.primary_key)
        diff = TableDiff(
            snap.name,
            database,
            "primary key" if pk else "whole-row hash",
            pk,
            total,
            None,
            total,
            0,
            0 if pk else None,
            work=work,
            columns=snap.columns,
        )
        diff.notes.append(
            "the table is not in the live database: every row is missing "
            "(bring it back with `safehold restore --table`)"
        )
        return diff
    common = tuple(c for c in snap.columns if c in live.columns)
    diff_notes: list[str] = []
    only_snap = [c for c in snap.columns if c not in live.columns]
    only_live = [c for c in live.columns if c not in snap.columns]
    if only_snap:
        diff_notes.append(f"columns only in the snapshot (not compared): {', '.join(only_snap)}")
    if only_live:
        diff_notes.append(f"columns only in live (not compared): {', '.join(only_live)}")
    key: tuple[str, ...] = tuple(snap.primary_key)
    if key and (tuple(live.primary_key) != key or not set(key) <= set(common)):
        diff_notes.append("the primary key differs between the snapshot and live")
        key = ()
    if not key:
        diff_notes.append(
            "no primary key: compared by whole-row hash (changed rows show as "
            "one missing and one added)"
        )
    keys = ", ".join(q(k) for k in key)
    lead = f"{keys}, " if key else ""
    w_live, w_snap = f"{work}_live", f"{work}_snap"
    w_miss, w_add, w_chg, w_lchg = f"{work}_miss", f"{work}_add", f"{work}_chg", f"{work}_lchg"
    row_hash = engine.hash_expr("s", common, multiset=not key)
    # 1. live keys + hashes into the work database while the scratch database hashes the
    #    snapshot's next to them (on its second connection: two servers, two cores)
    engine.create_work(w_live, f"SELECT {lead}{row_hash} AS h FROM {snap.ref} s WHERE 1=0")
    engine.side_by_side(
        lambda: engine.pull(f"SELECT {lead}{row_hash} AS h FROM {live.ref} s", w_live,
                            len(key) + 1),
        w_snap,
        f"SELECT {lead}{row_hash} AS h FROM {snap.ref} s",
    )  # fmt: skip
    snapshot_rows = _count(engine, engine.work_ref(w_snap))
    live_rows = _count(engine, engine.work_ref(w_live))
    L, S = engine.work_ref(w_live), engine.work_ref(w_snap)
    if key and engine.full_join:
        # one pass: a hash full join of the two (key, hash) tables keeps only the rows that
        # differ; the missing, added and changed keys are then read from that small table
        w_diff = f"{work}_diff"
        picks = ", ".join(f"COALESCE(s.{q(k)}, l.{q(k)}) AS {q(k)}" for k in key)
        engine.create_work(
            w_diff,
            f"SELECT CASE WHEN l.h IS NULL THEN 'm' WHEN s.h IS NULL THEN 'a' ELSE 'c' END "
            f"AS safehold_d, {picks} FROM {S} s FULL JOIN {L} l ON {_on(engine, 'l', 's', key)} "
            "WHERE l.h IS NULL OR s.h IS NULL OR s.h <> l.h",
        )
        D = engine.work_ref(w_diff)
        for name, kind in ((w_miss, "m"), (w_add, "a"), (w_chg, "c")):
            engine.create_work(name, f"SELECT {keys} FROM {D} WHERE safehold_d = '{kind}'")
        missing = _count(engine, engine.work_ref(w_miss))
        added = _count(engine, engine.work_ref(w_add))
        changed = _count(engine, engine.work_ref(w_chg))
        for name in (w_diff, w_live, w_snap):
            engine.drop_work(name)
    elif key:
        engine.index_work(w_live, key)
        engine.index_work(w_snap, key)
        s_keys = ", ".join(f"s.{q(k)}" for k in key)
        engine.create_work(
            w_miss,
            f"SELECT {s_keys} FROM {S} s WHERE NOT EXISTS "
            f"(SELECT 1 FROM {L} l WHERE {_on(engine, 'l', 's', key)})",
        )
        l_keys = ", ".join(f"l.{q(k)}" for k in key)
        engine.create_work(
            w_add,
            f"SELECT {l_keys} FROM {L} l WHERE NOT EXISTS "
            f"(SELECT 1 FROM {S} s WHERE {_on(engine, 'l', 's', key)})",
        )
        engine.create_work(
            w_chg,
            f"SELECT {s_keys} FROM {S} s JOIN {L} l "
            f"ON {_on(engine, 'l', 's', key)} WHERE s.h <> l.h",
        )
        missing = _count(engine, engine.work_ref(w_miss))
        added = _count(engine, engine.work_ref(w_add))
        changed = _count(engine, engine.work_ref(w_chg))
    else:
        grouped = "SELECT h, count(*) AS n FROM {} GROUP BY h"
        for name, more, fewer in ((w_miss, S, L), (w_add, L, S)):
            engine.create_work(
                name,
                f"SELECT a.h, a.n - COALESCE(b.n, 0) AS n FROM ({grouped.format(more)}) a "
                f"LEFT JOIN ({grouped.format(fewer)}) b ON b.h = a.h WHERE a.n > COALESCE(b.n, 0)",
            )
        missing = _sum(engine, engine.work_ref(w_miss))
        added = _sum(engine, engine.work_ref(w_add))
        changed = None
    diff = TableDiff(
        snap.name,
        database,
        "primary key" if key else "whole-row hash",
        list(key),
        snapshot_rows,
        live_rows,
        missing,
        added,
        changed,
        notes=diff_notes,
        work=work,
        columns=common,
    )
    # 2. the changed rows in full, to name the columns
    if key and changed:
        engine.create_work(
            w_lchg, f"SELECT {', '.join(q(c) for c in common)} FROM {snap.ref} WHERE 1=0"
        )
        changed_keys = engine.work_sql(
            f"SELECT {', '.join(engine.read(q(k)) for k in key)} FROM {engine.work_ref(w_chg)}"
        )
        cols = ", ".join(q(c) for c in common)
        marks = ", ".join([engine.param] * len(common))
        cursor = engine.work.cursor()
        try:
            for batch in _batches(changed_keys, 5000):
                rows = engine.live_rows(live, key, common, batch)
                cursor.executemany(
                    f"INSERT INTO {engine.work_ref(w_lchg)} ({cols}) VALUES ({marks})", rows
                )
        finally:
            cursor.close()
        engine.index_work(w_lchg, key)
        sums = ", ".join(
            f"SUM(CASE WHEN {engine.distinct(f's.{q(c)}', f'l.{q(c)}')} THEN 1 ELSE 0 END)"
            for c in common
        )
        row = engine.work_sql(
            f"SELECT {sums} FROM {snap.ref} s JOIN {engine.work_ref(w_lchg)} l "
            f"ON {_on(engine, 'l', 's', key)}"
        )[0]
        diff.changed_columns = {c: int(n or 0) for c, n in zip(common, row, strict=True) if n}
    if samples > 0:
        diff.samples = _samples(engine, diff, snap, live, key, common, samples)
    return diff


def missing_after(engine: RowEngine, diff: TableDiff, live: TableInfo) -> int | None:
    """After a recovery: how many of the rows `diff` found missing (its work table of keys)
    live still lacks, looked up by primary key on live; None for a table without one (it
    has to be compared again)."""
    key = tuple(diff.key)
    if not key:
        return None
    if not diff.missing:
        return 0
    q = engine.quote
    wanted = engine.work_sql(
        f"SELECT {', '.join(engine.read(q(k)) for k in key)} "
        f"FROM {engine.work_ref(diff.work + '_miss')}"
    )
    found = engine.live_rows(live, key, key, wanted)
    present = {tuple(str(v) for v in row) for row in found}
    return sum(1 for row in wanted if tuple(str(v) for v in row) not in present)


def _sum(engine: RowEngine, ref: str) -> int:
    rows = engine.work_sql(f"SELECT COALESCE(SUM(n), 0) FROM {ref}")
    return int(rows[0][0]) if rows else 0


def _samples(
    engine: RowEngine,
    diff: TableDiff,
    snap: TableInfo,
    live: TableInfo,
    key: tuple[str, ...],
    common: tuple[str, ...],
    limit: int,
) -> dict[str, list[dict[str, Any]]]:
    q = engine.quote
    work = diff.work
    read = ", ".join(engine.sample(f"s.{q(c)}") for c in common)
    out: dict[str, list[dict[str, Any]]] = {}
    order = ", ".join(f"s.{q(k)}" for k in key)
    if diff.missing:
        if key:
            rows = engine.work_sql(
                f"SELECT {read} FROM {snap.ref} s JOIN {engine.work_ref(work + '_miss')} m "
                f"ON {_on(engine, 'm', 's', key)} ORDER BY {order} LIMIT {int(limit)}"
            )
        else:
            rows = engine.work_sql(
                _multiset_missing(engine, snap, diff.work, common, sample=True)
                + f" LIMIT {int(limit)}"
            )
        out["missing"] = [_row(common, r) for r in rows]
    if diff.added and key:
        added_keys = engine.work_sql(
            f"SELECT {', '.join(engine.read(f's.{q(k)}') for k in key)} "
            f"FROM {engine.work_ref(work + '_add')} s ORDER BY {order} LIMIT {int(limit)}"
        )
        rows = engine.live_rows(live, key, common, added_keys, native=True)
        place = {tuple(str(v) for v in k): i for i, k in enumerate(added_keys)}
        rows.sort(key=lambda r: place.get(tuple(str(r[common.index(k)]) for k in key), 0))
        out["added"] = [_row(common, r) for r in rows]
    if diff.changed:
        l_read = ", ".join(engine.sample(f"l.{q(c)}") for c in common)
        rows = engine.work_sql(
            f"SELECT {read}, {l_read} FROM {snap.ref} s JOIN {engine.work_ref(work + '_lchg')} l "
            f"ON {_on(engine, 'l', 's', key)} ORDER BY {order} LIMIT {int(limit)}"
        )
        changes: list[dict[str, Any]] = []
        width = len(common)
        for row in rows:
            old, new = row[:width], row[width:]
            changes.append(
                {
                    "key": {k: jsonable(old[common.index(k)]) for k in key},
                    "columns": {
                        c: {"snapshot": jsonable(a), "live": jsonable(b)}
                        for c, a, b in zip(common, old, new, strict=True)
                        if a != b
                    },
                }
            )
        out["changed"] = changes
    return out


def _multiset_missing(
    engine: RowEngine, snap: TableInfo, work: str, columns: Sequence[str], sample: bool = False
) -> str:
    """The snapshot rows of a table without a primary key that live lacks: of each row
    hash, as many rows as live has fewer."""
    q = engine.quote
    h = engine.hash_expr("s", columns, multiset=True)
    pick = engine.sample if sample else engine.read
    return (
        f"SELECT {', '.join(pick(f'x.{q(c)}') for c in columns)} FROM "
        f"(SELECT s.*, {h} AS safehold_h, ROW_NUMBER() OVER (PARTITION BY {h}) "
        f"AS safehold_rn FROM {snap.ref} s) x JOIN "
        f"{engine.work_ref(work + '_miss')} m ON m.h = x.safehold_h "
        "AND x.safehold_rn <= m.n"
    )


def _row(columns: Sequence[str], values: Iterable[Any]) -> dict[str, Any]:
    return {c: jsonable(v) for c, v in zip(columns, values, strict=True)}


# ----- the copy-back ----------------------------------------------------------------------------


def plan_recover(
    engine: RowEngine,
    diffs: Sequence[TableDiff],
    snap_tables: dict[str, TableInfo],
    live_tables: dict[str, TableInfo],
    *,
    restore_changed: bool = False,
) -> list[RecoverStep]:
    """The writes that bring the missing rows (and with `restore_changed` the snapshot's
    values of the changed rows) back into live, in foreign-key order, with the conflicts:
    rows whose unique key (other than the primary key) a live row now holds."""
    q = engine.quote
    by_name = {d.table: d for d in diffs}
    chosen = [live_tables[d.table] for d in diffs if d.table in live_tables]
    steps: list[RecoverStep] = []
    for live in fk_order(chosen):
        diff = by_name[live.name]
        snap = snap_tables[live.name]
        key = tuple(diff.key)
        columns = diff.columns
        read = ", ".join(engine.read(f"s.{q(c)}") for c in columns)
        step = RecoverStep(live.name, 0, 0, [], columns=columns, key=key)
        if diff.missing:
            if key:
                rows = engine.work_sql(
                    f"SELECT {read} FROM {snap.ref} s JOIN {engine.work_ref(diff.work + '_miss')} m"
                    f" ON {_on(engine, 'm', 's', key)} ORDER BY "
                    + ", ".join(f"s.{q(k)}" for k in key)
                )
            else:
                rows = engine.work_sql(_multiset_missing(engine, snap, diff.work, columns))
            kept, conflicts = _check_unique(engine, live, key, columns, rows, updates=False)
            step.insert_rows, step.conflicts = kept, conflicts
            step.inserts = len(kept)
            step.statements.append(
                f"{engine.insert_statement(live, columns)}  -- {len(kept)} row(s)"
            )
        if restore_changed and key and diff.changed:
            rows = engine.work_sql(
                f"SELECT {read} FROM {snap.ref} s JOIN {engine.work_ref(diff.work + '_chg')} c "
                f"ON {_on(engine, 'c', 's', key)} ORDER BY " + ", ".join(f"s.{q(k)}" for k in key)
            )
            kept, conflicts = _check_unique(engine, live, key, columns, rows, updates=True)
            step.update_rows = kept
            step.conflicts.extend(conflicts)
            step.updates = len(kept)
            step.statements.append(
                f"{engine.update_statement(live, key, columns)}  -- {len(kept)} row(s)"
            )
        if step.inserts or step.updates or step.conflicts:
            steps.append(step)
    return steps


def _check_unique(
    engine: RowEngine,
    live: TableInfo,
    key: tuple[str, ...],
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    *,
    updates: bool,
) -> tuple[list[tuple[Any, ...]], list[Conflict]]:
    """Split `rows` into those that can be written and those whose unique keys live rows
    (other rows, for updates) hold now. Rows among themselves cannot clash: they come from
    one consistent snapshot."""
    index = {c: i for i, c in enumerate(columns)}
    bad: dict[int, Conflict] = {}
    for unique in live.unique_keys:
        if not set(unique) <= set(columns) or not rows:
            continue
        values = [tuple(row[index[c]] for c in unique) for row in rows]
        wanted = sorted({v for v in values if None not in v}, key=repr)
        if not wanted:
            continue
        shown = tuple(unique) + tuple(k for k in key if k not in unique)
        found = engine.live_rows(live, unique, shown, wanted)
        holders: dict[tuple[Any, ...], set[tuple[Any, ...]]] = {}
        for hit in found:
            holders.setdefault(tuple(hit[: len(unique)]), set()).add(tuple(hit))
        for position, (row, value) in enumerate(zip(rows, values, strict=True)):
            if position in bad or value not in holders:
                continue
            if updates and key:  # the row itself holding its own value is no conflict
                own = tuple(row[index[c]] for c in shown)
                if holders[value] == {own}:
                    continue
            row_key = {k: jsonable(row[index[k]]) for k in (key or columns)}
            bad[position] = Conflict(live.name, row_key, list(unique), [jsonable(v) for v in value])
    kept = [row for position, row in enumerate(rows) if position not in bad]
    return kept, [bad[p] for p in sorted(bad)]


def execute_recover(
    engine: RowEngine,
    steps: Sequence[RecoverStep],
    live_tables: dict[str, TableInfo],
    *,
    skip_conflicts: bool = False,
) -> None:
    """All steps in ONE live transaction, in their (foreign-key) order, then the sequences.
    Any database error rolls everything back and raises RowDiffError."""
    if any(step.conflicts for step in steps) and not skip_conflicts:
        raise RowDiffError("conflicts: nothing written", hint="add --skip-conflicts")
    engine.begin_live()
    try:
        for step in steps:
            table = live_tables[step.table]
            if step.insert_rows:
                engine.insert_live(table, step.columns, step.insert_rows)
            if step.update_rows:
                engine.update_live(table, step.key, step.columns, step.update_rows)
            step.skipped = len(step.conflicts)
        for step in steps:
            if step.inserts:
                step.sequences = engine.fix_sequences(live_tables[step.table], dry_run=False)
        engine.commit_live()
    except RowDiffError:
        engine.rollback_live()
        raise
    except Exception as err:
        engine.rollback_live()
        raise RowDiffError(
            f"the copy-back failed and was rolled back, nothing was written: {err}",
            hint="a foreign key to a row that is missing too? recover its table as well "
            "(--table), or all tables",
        ) from None
    extra = engine.after_commit([live_tables[s.table] for s in steps if s.inserts])
    if extra and steps:
        steps[0].sequences.extend(extra)


def table_selected(name: str, wanted: Sequence[str]) -> bool:
    """`--table orders` names `public.orders` too (any schema)."""
    if not wanted:
        return True
    return name in wanted or name.rsplit(".", 1)[-1] in wanted


def _run_sql(connection: Any, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one statement on a DB-API connection; its rows, or [] for a statement without."""
    cursor = connection.cursor()
    try:
        if params:
            cursor.execute(query, tuple(params))
        else:
            cursor.execute(query)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()
