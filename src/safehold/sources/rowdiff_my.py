"""MySQL / MariaDB for the row diff: work tables in database `safehold_work` of the scratch
server, live keys and row hashes (MD5 over length-prefixed values, so NULLs and separators
cannot collide) streamed over with an unbuffered cursor, both sessions in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql  # type: ignore[import-untyped]
import pymysql.cursors  # type: ignore[import-untyped]

from safehold.redaction import redact_secrets
from safehold.sources.mysql import MyLocation, connect, quote_identifier
from safehold.sources.rowdiff import RowDiffError, RowEngine, TableInfo

WORK_DB = "safehold_work"


def connect_scratch(location: MyLocation, dbname: str, what: str = "scratch") -> Any:
    try:
        conn = connect(location, dbname)
        with conn.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute("SET SESSION group_concat_max_len = 1048576")
        return conn
    except pymysql.err.MySQLError as err:
        raise RowDiffError(
            f"cannot connect to the {what} database {dbname} at {location.redacted}: "
            + redact_secrets(str(err), [location.password])
        ) from None


def _rows(conn: Any, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(query, tuple(args) if args else None)
        return list(cursor.fetchall())


def catalog(conn: Any) -> dict[str, TableInfo]:
    tables = [
        str(r[0])
        for r in _rows(
            conn,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        )
    ]
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, type_, extra in _rows(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, EXTRA FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
    ):
        extra = str(extra or "").lower()
        if "generated" in extra or "virtual" in extra or "stored" in extra or "persistent" in extra:
            continue
        columns.setdefault(str(table), []).append(
            (str(column), str(type_), "auto_increment" in extra)
        )
    keys: dict[str, dict[str, list[str]]] = {}
    for table, index, column in _rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() AND NON_UNIQUE = 0 AND SUB_PART IS NULL "
        "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    ):
        keys.setdefault(str(table), {}).setdefault(str(index), []).append(str(column))
    parents: dict[str, set[str]] = {}
    for table, parent in _rows(
        conn,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_SCHEMA = DATABASE() "
        "AND REFERENCED_TABLE_NAME IS NOT NULL",
    ):
        parents.setdefault(str(table), set()).add(str(parent))
    found: dict[str, TableInfo] = {}
    for table in tables:
        cols = columns.get(table, [])
        indexes = keys.get(table, {})
        primary = tuple(indexes.get("PRIMARY", ()))
        uniques = tuple(tuple(v) for k, v in sorted(indexes.items()) if k != "PRIMARY")
        found[table] = TableInfo(
            table,
            quote_identifier(table),
            tuple(c[0] for c in cols),
            tuple(c[1] for c in cols),
            primary,
            uniques,
            tuple(sorted(parents.get(table, set()))),
            tuple(c[0] for c in cols if c[2]),
        )
    return found


class MyRowEngine(RowEngine):
    kind = "mysql"

    def __init__(self, scratch: MyLocation, scratch_db: str, live: MyLocation, live_db: str):
        self.live_location = live
        self.work = connect_scratch(scratch, scratch_db, "scratch")
        try:
            self.side = connect_scratch(scratch, scratch_db, "scratch")
            self.live = connect_scratch(live, live_db, "live")
        except RowDiffError:
            self.close()
            raise
        _rows(self.work, f"CREATE DATABASE IF NOT EXISTS {quote_identifier(WORK_DB)}")

    def quote(self, name: str) -> str:
        return quote_identifier(name)

    def work_ref(self, name: str) -> str:
        return f"{quote_identifier(WORK_DB)}.{quote_identifier(name)}"

    def hash_expr(self, alias: str, columns: Sequence[str], *, multiset: bool = False) -> str:
        parts = []
        for column in columns:
            ref = f"{alias}.{self.quote(column)}"
            parts.append(f"IF({ref} IS NULL, 'N', CONCAT('V', LENGTH({ref}), ':', {ref}))")
        return f"MD5(CONCAT_WS('|', {', '.join(parts)}))"

    def distinct(self, left: str, right: str) -> str:
        return f"NOT ({left} <=> {right})"

    def snapshot_tables(self) -> dict[str, TableInfo]:
        return catalog(self.work)

    def live_tables(self) -> dict[str, TableInfo]:
        return catalog(self.live)

    def pull(self, select: str, into: str, width: int) -> None:
        source = self.live.cursor(pymysql.cursors.SSCursor)
        marks = ", ".join(["%s"] * width)
        try:
            source.execute(select)
            with self.work.cursor() as target:
                while True:
                    rows = source.fetchmany(5000)
                    if not rows:
                        break
                    target.executemany(f"INSERT INTO {self.work_ref(into)} VALUES ({marks})", rows)
        except pymysql.err.MySQLError as err:
            raise RowDiffError(
                "reading the live rows failed: "
                + redact_secrets(str(err), [self.live_location.password])
            ) from None
        finally:
            source.close()

    def begin_live(self) -> None:
        self.live.begin()

    def commit_live(self) -> None:
        self.live.commit()

    def rollback_live(self) -> None:
        self.live.rollback()

    def fix_sequences(self, table: TableInfo, dry_run: bool) -> list[str]:
        if dry_run and table.serials:
            return [
                f"ALTER TABLE {table.ref} AUTO_INCREMENT = max({table.serials[0]}) + 1  "
                "-- after the commit, when it is behind"
            ]
        return []  # ALTER TABLE would commit the transaction: after_commit does it

    def after_commit(self, tables: Sequence[TableInfo]) -> list[str]:
        done: list[str] = []
        for table in tables:
            for column in table.serials:
                high = _rows(self.live, f"SELECT MAX({self.quote(column)}) FROM {table.ref}")
                if not high or high[0][0] is None:
                    continue
                top = int(high[0][0])
                current = _auto_increment(self.live, table.name)
                if current is not None and current > top:
                    done.append(
                        f"{table.name}.{column}: AUTO_INCREMENT already past {top} (at {current})"
                    )
                    continue
                _rows(self.live, f"ALTER TABLE {table.ref} AUTO_INCREMENT = {top + 1}")
                done.append(f"{table.name}.{column}: AUTO_INCREMENT moved to {top + 1}")
        return done


def _auto_increment(conn: Any, table: str) -> int | None:
    with conn.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SHOW TABLE STATUS LIKE %s", (table,))
        row = cursor.fetchone()
    value = row.get("Auto_increment") if row else None
    return int(value) if value is not None else None
