"""Read a live database's schema (user tables' columns) and its applied migrations, from the
catalog and from the migration framework's own table."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlsplit, urlunsplit

from safehold.errors import SafeholdError
from safehold.migrations.schema import Column, Schema
from safehold.sources.dbquery import CheckQueryError, Database

# The table each framework keeps, and how to read one name per applied migration from it.
_FRAMEWORK_TABLES: dict[str, str] = {
    "django": "django_migrations",
    "alembic": "alembic_version",
    "rails": "schema_migrations",
    "prisma": "_prisma_migrations",
    "flyway": "flyway_schema_history",
    "knex": "knex_migrations",
}


class ReleaseDatabaseError(SafeholdError):
    """The release's database could not be read."""


def database_url(url: str, dbname: str | None) -> str:
    """`url` with its database name replaced by `dbname` (when given)."""
    if not dbname:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def read_schema(database: Database) -> Schema:
    """Every user table's columns: type, nullability, default."""
    schema: Schema = {}
    if database.kind == "sqlite":
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        for (table,) in _query(database, tables + " ORDER BY name"):
            quoted = '"' + str(table).replace('"', '""') + '"'
            for row in _query(database, f"PRAGMA table_info({quoted})"):
                optional = not row[3] and not row[5]
                schema.setdefault(str(table), {})[str(row[1])] = Column(
                    str(row[2]).lower(), optional, None if row[4] is None else str(row[4])
                )
        return schema
    if database.kind == "postgres":
        sql = (
            "SELECT c.table_schema, c.table_name, c.column_name, c.udt_name, c.is_nullable, "
            "c.column_default, c.character_maximum_length FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            "AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' "
            "WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2, c.ordinal_position"
        )
    else:
        sql = (
            "SELECT c.table_schema, c.table_name, c.column_name, c.column_type, c.is_nullable, "
            "c.column_default, NULL FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
            "AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' "
            "WHERE c.table_schema = DATABASE() ORDER BY 1, 2, c.ordinal_position"
        )
    for table_schema, table, column, type_name, nullable, default, length in _query(database, sql):
        label = str(table) if table_schema in ("public", None) or database.kind == "mysql" \
            else f"{table_schema}.{table}"  # fmt: skip
        shown = f"{type_name}({length})" if length else str(type_name)
        schema.setdefault(label, {})[str(column)] = Column(
            shown.lower(), str(nullable).upper() == "YES", None if default is None else str(default)
        )
    return schema


def read_migrations(database: Database, framework: str, query: str | None) -> tuple[str, list[str]]:
    """The framework found (or given) and its applied migrations, oldest first."""
    if query:
        return "query", [_one_name(row) for row in _query(database, query)]
    if framework == "none":
        return "none", []
    tables = {name.lower() for name in _table_names(database)}
    chosen = framework
    if framework == "auto":
        chosen = next(
            (name for name, table in _FRAMEWORK_TABLES.items() if table in tables), "none"
        )
        if chosen == "none":
            return "none", []
    elif _FRAMEWORK_TABLES[framework] not in tables:
        return framework, []
    return chosen, _READERS[chosen](database)


def _table_names(database: Database) -> list[str]:
    if database.kind == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    elif database.kind == "postgres":
        sql = ("SELECT table_name FROM information_schema.tables WHERE table_schema NOT IN "
               "('pg_catalog', 'information_schema')")  # fmt: skip
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    return [str(row[0]) for row in _query(database, sql)]


def _one_name(row: tuple[object, ...]) -> str:
    return ":".join(str(value) for value in row)


def _names(sql: str) -> Callable[[Database], list[str]]:
    def read(database: Database) -> list[str]:
        return [_one_name(row) for row in _query(database, sql)]

    return read


_READERS: dict[str, Callable[[Database], list[str]]] = {
    "django": _names("SELECT app, name FROM django_migrations ORDER BY id"),
    "alembic": _names("SELECT version_num FROM alembic_version ORDER BY version_num"),
    "rails": _names("SELECT version FROM schema_migrations ORDER BY version"),
    "prisma": _names(
        "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL "
        "AND rolled_back_at IS NULL ORDER BY finished_at, migration_name"
    ),
    "flyway": _names(
        "SELECT version, description FROM flyway_schema_history WHERE success "
        "ORDER BY installed_rank"
    ),
    "knex": _names("SELECT name FROM knex_migrations ORDER BY id"),
}


def _query(database: Database, sql: str) -> list[tuple[object, ...]]:
    try:
        return database.query(sql)
    except CheckQueryError as error:
        raise ReleaseDatabaseError(
            error.message.replace("query on", "reading", 1),
            hint="check that the release's database is reachable: safehold plan check --connect",
        ) from None
