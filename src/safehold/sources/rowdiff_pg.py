"""PostgreSQL for the row diff: work tables in schema `safehold_work` of the scratch database,
live keys and row hashes brought over with COPY, values read and written as text (the
server's own text form, as pg_dump writes it), keys looked up with `unnest` arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from safehold.redaction import redact_secrets
from safehold.sources.postgres import PgLocation
from safehold.sources.rowdiff import WORK_PREFIX, RowDiffError, RowEngine, TableInfo

WORK_SCHEMA = "safehold_work"

# the same text form of every value on both servers
_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

_TABLES = """
SELECT n.nspname, c.relname, c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND NOT c.relispartition
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
  AND n.nspname <> %s
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
       pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attrelid, a.attnum
"""

_INDEXES = """
SELECT i.indrelid, i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, pos)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
             ORDER BY k.pos)
FROM pg_index i
WHERE i.indrelid = ANY(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND i.indisvalid
ORDER BY i.indrelid, NOT i.indisprimary, i.indexrelid
"""

_PARENTS = """
SELECT co.conrelid, pn.nspname || '.' || pc.relname
FROM pg_constraint co JOIN pg_class pc ON pc.oid = co.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE co.conrelid = ANY(%s) AND co.contype = 'f'
"""


def connect_scratch(
    location: PgLocation, dbname: str, what: str = "scratch"
) -> psycopg.Connection[Any]:
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": "safehold-db-diff"}
    if location.password is not None:
        kwargs["password"] = location.password
    if "connect_timeout" not in location.params:
        kwargs["connect_timeout"] = 30
    try:
        conn = psycopg.connect(location.conninfo(dbname), **kwargs)
    except psycopg.Error as err:
        raise RowDiffError(
            f"cannot connect to the {what} database {dbname} at {location.redacted}: "
            + redact_secrets(str(err).strip(), [location.password])
        ) from None
    for statement in _SESSION:
        conn.execute(statement)
    return conn


def catalog(conn: psycopg.Connection[Any], ref_prefix: str = "") -> dict[str, TableInfo]:
    """Every user table of the database: columns (generated ones left out), primary key,
    other unique keys, the tables its foreign keys reference, its serial columns."""
    tables = conn.execute(_TABLES, (WORK_SCHEMA,)).fetchall()
    oids = [int(row[2]) for row in tables]
    columns: dict[int, list[tuple[str, str, str | None]]] = {}
    for oid, name, type_, sequence in conn.execute(_COLUMNS, (oids,)).fetchall():
        columns.setdefault(int(oid), []).append((str(name), str(type_), sequence))
    pks: dict[int, tuple[str, ...]] = {}
    uniques: dict[int, list[tuple[str, ...]]] = {}
    for oid, primary, names in conn.execute(_INDEXES, (oids,)).fetchall():
        if primary:
            pks[int(oid)] = tuple(names)
        else:
            uniques.setdefault(int(oid), []).append(tuple(names))
    parents: dict[int, set[str]] = {}
    for oid, parent in conn.execute(_PARENTS, (oids,)).fetchall():
        parents.setdefault(int(oid), set()).add(str(parent))
    found: dict[str, TableInfo] = {}
    for schema, name, oid in tables:
        cols = columns.get(int(oid), [])
        ref = sql.Identifier(str(schema), str(name)).as_string(conn)
        found[f"{schema}.{name}"] = TableInfo(
            f"{schema}.{name}",
            ref,
            tuple(c[0] for c in cols),
            tuple(c[1] for c in cols),
            pks.get(int(oid), ()),
            tuple(uniques.get(int(oid), [])),
            tuple(sorted(parents.get(int(oid), set()))),
            tuple(c[0] for c in cols if c[2]),
        )
    return found


# the scratch server is ours: big hash joins and aggregates stay in memory
_WORK_SESSION = ("SET work_mem = '256MB'",)
# hashtextextended (a 64-bit hash of the row text, the one hash partitioning uses) first
# came with PostgreSQL 11; older servers hash with md5
_FAST_HASH_SINCE = 110000


class PgRowEngine(RowEngine):
    kind = "postgres"
    full_join = True

    def __init__(self, scratch: PgLocation, scratch_db: str, live: PgLocation, live_db: str):
        self.live_location = live
        self.work = connect_scratch(scratch, scratch_db, "scratch")
        try:
            self.side = connect_scratch(scratch, scratch_db, "scratch")
            self.live = connect_scratch(live, live_db, "live")
        except RowDiffError:
            self.close()
            raise
        for conn in (self.work, self.side):
            for statement in _WORK_SESSION:
                conn.execute(statement)
        self.work.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(WORK_SCHEMA))
        )
        self.fast_hash = min(self.work.info.server_version, self.live.info.server_version) >= (
            _FAST_HASH_SINCE
        )

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def work_ref(self, name: str) -> str:
        return f"{self.quote(WORK_SCHEMA)}.{self.quote(name)}"

    def hash_expr(self, alias: str, columns: Sequence[str], *, multiset: bool = False) -> str:
        """The row's text form (the same on every server: the session settings above)
        hashed: rows matched by key compare a 64-bit hashtextextended (a third of md5's
        cost); rows told apart by their hash alone (no primary key) keep md5's 128 bits."""
        inner = ", ".join(f"{alias}.{self.quote(c)}" for c in columns)
        if multiset or not self.fast_hash:
            return f"md5(ROW({inner})::text)"
        return f'hashtextextended(ROW({inner})::text COLLATE "C", 0)'

    def create_sql(self, name: str, select: str) -> str:
        # a work table is read once and thrown away: no WAL for it
        return f"CREATE UNLOGGED TABLE {self.work_ref(name)} AS {select}"

    def distinct(self, left: str, right: str) -> str:
        return f"{left}::text IS DISTINCT FROM {right}::text"

    def read(self, expr: str) -> str:
        return f"{expr}::text"

    def snapshot_tables(self) -> dict[str, TableInfo]:
        return catalog(self.work)

    def live_tables(self) -> dict[str, TableInfo]:
        return catalog(self.live)

    def pull(self, select: str, into: str, width: int) -> None:
        try:
            with (
                self.live.cursor() as source,
                self.work.cursor() as target,
                source.copy(f"COPY ({select}) TO STDOUT") as out,
                target.copy(f"COPY {self.work_ref(into)} FROM STDIN") as into_copy,
            ):
                for data in out:
                    into_copy.write(data)
        except psycopg.Error as err:
            raise RowDiffError(f"reading the live rows failed: {self._clean(err)}") from None

    def _clean(self, err: Exception) -> str:
        return redact_secrets(str(err).strip(), [self.live_location.password])

    def live_rows(
        self,
        table: TableInfo,
        key: Sequence[str],
        columns: Sequence[str],
        keys: Sequence[tuple[Any, ...]],
        *,
        native: bool = False,
    ) -> list[tuple[Any, ...]]:
        types = dict(zip(table.columns, table.types, strict=True))
        q = self.quote
        cast = "" if native else "::text"
        cols = ", ".join(f"t.{q(c)}{cast}" for c in columns)
        names = ", ".join(f"u{i}" for i in range(len(key)))
        arrays = ", ".join(["%s::text[]"] * len(key))
        casts = ", ".join(f"u{i}::{types[k]}" for i, k in enumerate(key))
        keycols = ", ".join(f"t.{q(k)}" for k in key)
        query = (
            f"SELECT {cols} FROM {table.ref} t WHERE ({keycols}) IN "
            f"(SELECT {casts} FROM unnest({arrays}) AS u({names}))"
        )
        found: list[tuple[Any, ...]] = []
        rows = list(keys)
        for start in range(0, len(rows), 5000):
            batch = rows[start : start + 5000]
            params = [
                [None if v is None else str(v) for v in col] for col in zip(*batch, strict=True)
            ]
            found.extend(self.live.execute(query, params).fetchall())
        return found

    def insert_live(
        self, table: TableInfo, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        cols = ", ".join(self.quote(c) for c in columns)
        with (
            self.live.cursor() as cursor,
            cursor.copy(f"COPY {table.ref} ({cols}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def insert_statement(self, table: TableInfo, columns: Sequence[str]) -> str:
        return f"COPY {table.ref} ({', '.join(self.quote(c) for c in columns)}) FROM STDIN"

    def begin_live(self) -> None:
        self.live.autocommit = False

    def commit_live(self) -> None:
        self.live.commit()
        self.live.autocommit = True

    def rollback_live(self) -> None:
        try:
            self.live.rollback()
        finally:
            self.live.autocommit = True

    def fix_sequences(self, table: TableInfo, dry_run: bool) -> list[str]:
        done: list[str] = []
        for column in table.serials:
            row = self.live.execute(
                "SELECT pg_get_serial_sequence(%s, %s)", (table.ref, column)
            ).fetchone()
            sequence = row[0] if row else None
            if not sequence:
                continue
            statement = (
                f"SELECT setval('{sequence}', (SELECT max({self.quote(column)}) FROM {table.ref}))"
            )
            if dry_run:
                done.append(f"{statement}  -- when {sequence} is behind")
                continue
            high = self.live.execute(
                sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), sql.SQL(table.ref))
            ).fetchone()
            current = self.live.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(sequence))
            ).fetchone()
            if not high or high[0] is None or current is None:
                continue
            top, last, called = int(high[0]), int(current[0]), bool(current[1])
            if top > last or (top == last and not called):
                self.live.execute("SELECT setval(%s, %s)", (sequence, top))
                done.append(f"{sequence}: moved to {top} (was {last})")
            else:
                done.append(f"{sequence}: already past {top} (at {last})")
        return done

    def drop_all_work(self) -> None:
        rows = self.work.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
            (WORK_SCHEMA, WORK_PREFIX + "%"),
        ).fetchall()
        for (name,) in rows:
            self.drop_work(str(name))
