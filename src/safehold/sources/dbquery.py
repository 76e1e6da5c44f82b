"""Queries against restored databases, for drill checks: run a plan's SQL, and find how new
the newest dated row is (`max(created_at)` over the tables that have such a column).

A `Database` is where a restored database can be reached: a PostgreSQL or MySQL URL, or a
SQLite file. Errors become `CheckQueryError` with the secret-free message of the driver."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from safehold.errors import SafeholdError
from safehold.redaction import redact

QUERY_TIMEOUT_S = 120


class CheckQueryError(SafeholdError):
    """A drill query failed."""


@dataclass(frozen=True)
class Database:
    kind: str  # postgres | mysql | sqlite
    location: str  # a URL, or the path of a SQLite file
    label: str  # e.g. "db/shop" for messages

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            if self.kind == "postgres":
                return _pg_query(self.location, sql)
            if self.kind == "mysql":
                return _my_query(self.location, sql)
            return _sqlite_query(self.location, sql)
        except CheckQueryError:
            raise
        except Exception as err:
            text = redact(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
            raise CheckQueryError(f"query on {self.label} failed: {text}") from None


def _pg_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    from safehold.sources.postgres import PgLocation

    location = PgLocation.parse(url)
    with psycopg.connect(
        location.conninfo(location.dbname or "postgres"),
        password=location.password,
        autocommit=True,
        options=f"-c statement_timeout={QUERY_TIMEOUT_S * 1000}",
    ) as conn:
        cursor = conn.execute(sql.encode())
        return list(cursor.fetchall()) if cursor.description else []


def _my_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    from safehold.sources.mysql import MyLocation, connect

    location = MyLocation.parse(url)
    conn = connect(location, location.dbname, read_timeout=QUERY_TIMEOUT_S)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        conn.close()


def _sqlite_query(path: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=QUERY_TIMEOUT_S)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


# ----- newest dated record ----------------------------------------------------------------


@dataclass(frozen=True)
class NewestRecord:
    table: str
    column: str
    value: datetime


def _dated_columns_sql(kind: str, columns: Sequence[str]) -> str:
    names = ", ".join("'" + c.replace("'", "''") + "'" for c in columns)
    if kind == "postgres":
        return (
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            f"WHERE column_name IN ({names}) AND data_type IN ('timestamp with time zone', "
            "'timestamp without time zone', 'date') AND table_schema NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        )
    return (
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        f"WHERE column_name IN ({names}) AND data_type IN ('datetime', 'timestamp', 'date') "
        "AND table_schema = DATABASE() ORDER BY 1, 2, 3"
    )


def _quote(kind: str, name: str) -> str:
    if kind == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _as_datetime(value: Any) -> datetime | None:
    """A column value as an aware UTC datetime (naive values are taken as UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds or seconds
        parsed = datetime.fromtimestamp(seconds, UTC)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    elif hasattr(value, "isoformat"):  # a date
        parsed = datetime.fromisoformat(value.isoformat())
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def newest_records(database: Database, columns: Sequence[str]) -> list[NewestRecord]:
    """`max(column)` of every table that has one of `columns`, newest first."""
    if not columns:
        return []
    if database.kind == "sqlite":
        candidates = _sqlite_dated_columns(database, columns)
    else:
        rows = database.query(_dated_columns_sql(database.kind, columns))
        candidates = [
            (f"{schema}.{table}", schema, table, column) for schema, table, column in rows
        ]
    found = []
    for label, schema, table, column in candidates:
        qualified = _quote(database.kind, table)
        if schema:
            qualified = f"{_quote(database.kind, schema)}.{qualified}"
        rows = database.query(f"SELECT max({_quote(database.kind, column)}) FROM {qualified}")
        value = _as_datetime(rows[0][0]) if rows else None
        if value is not None:
            found.append(NewestRecord(label, column, value))
    return sorted(found, key=lambda record: record.value, reverse=True)


def _sqlite_dated_columns(
    database: Database, columns: Sequence[str]
) -> list[tuple[str, str, str, str]]:
    wanted = set(columns)
    tables = database.query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    found = []
    for (table,) in tables:
        info = database.query(f"PRAGMA table_info({_quote('sqlite', table)})")
        for row in info:
            if row[1] in wanted:
                found.append((table, "", table, row[1]))
    return found
