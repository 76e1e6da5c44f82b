"""The live schema and the applied migrations, read from real PostgreSQL, MariaDB and SQLite;
and the rule that says whether the change between two schemas can be undone by code rollback."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from safehold.migrations.schema import schema_change
from safehold.sources.dbquery import Database
from safehold.sources.schema_reader import ReleaseDatabaseError, read_migrations, read_schema
from tests.servers import MariadbServer, PostgresServer

CREATE = "CREATE TABLE orders (id INTEGER PRIMARY KEY, title VARCHAR(100) NOT NULL, note TEXT)"
MIGRATIONS = (
    "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app VARCHAR(100), name VARCHAR(100))",
    "INSERT INTO django_migrations VALUES (1, 'shop', '0001_initial'), (2, 'shop', '0002_note')",
)


def _check(database: Database, run: object) -> None:
    assert callable(run)
    before = read_schema(database)
    assert set(before["orders"]) == {"id", "title", "note"}
    assert before["orders"]["note"].nullable and not before["orders"]["title"].nullable
    assert read_migrations(database, "auto", None) == (
        "django",
        ["shop:0001_initial", "shop:0002_note"],
    )
    assert read_migrations(database, "alembic", None) == ("alembic", [])
    assert read_migrations(database, "none", None) == ("none", [])
    query = "SELECT name FROM django_migrations WHERE id = 2"
    assert read_migrations(database, "auto", query) == ("query", ["0002_note"])

    run("ALTER TABLE orders ADD COLUMN region VARCHAR(2)")
    run("CREATE TABLE coupons (id INTEGER PRIMARY KEY)")
    additive = schema_change(before, read_schema(database))
    assert additive.tables_added == ["coupons"]
    assert additive.columns_added == ["orders.region"]
    assert additive.reversible

    middle = read_schema(database)
    run("ALTER TABLE orders DROP COLUMN note")
    run("ALTER TABLE orders ADD COLUMN total INTEGER NOT NULL DEFAULT 0")
    run(
        "ALTER TABLE orders ADD COLUMN must INTEGER NOT NULL"
        + (" DEFAULT 1" if database.kind == "sqlite" else "")
    )
    destructive = schema_change(middle, read_schema(database))
    assert destructive.columns_dropped == ["orders.note"]
    reasons = destructive.reasons_unsafe()
    assert "column orders.note was dropped" in reasons
    if database.kind != "sqlite":  # SQLite refuses NOT NULL without a default outright
        assert any("orders.must is required" in reason for reason in reasons)
    assert not any("orders.total" in reason for reason in reasons)
    assert not destructive.reversible


def test_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute(CREATE)
        for statement in MIGRATIONS:
            conn.execute(statement)

    def run(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(sql)

    _check(Database("sqlite", str(path), "db"), run)


def test_postgres(postgres_server: PostgresServer) -> None:
    name = f"schema_{os.getpid()}"
    postgres_server.create_database(name)
    try:
        for statement in (CREATE, *MIGRATIONS):
            postgres_server.psql(statement, db=name)
        _check(Database("postgres", postgres_server.url(name), "db"),
               lambda sql: postgres_server.psql(sql, db=name))  # fmt: skip
    finally:
        postgres_server.drop_database(name)


def test_mariadb(mariadb_server: MariadbServer) -> None:
    name = f"schema_{os.getpid()}"
    mariadb_server.create_database(name)
    try:
        for statement in (CREATE, *MIGRATIONS):
            mariadb_server.sql(statement, db=name)
        _check(Database("mysql", mariadb_server.url(name), "db"),
               lambda sql: mariadb_server.sql(sql, db=name))  # fmt: skip
    finally:
        mariadb_server.drop_database(name)


def test_an_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    database = Database("postgres", "postgresql://nobody:secret@127.0.0.1:1/none", "db/none")
    with pytest.raises(ReleaseDatabaseError) as caught:
        read_schema(database)
    assert caught.value.message.startswith("reading db/none failed")
    assert "secret" not in caught.value.message
