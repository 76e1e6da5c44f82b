"""Copy whole tables from a restored snapshot copy (a scratch database or file) into a target
database: `safehold restore SNAPSHOT --source db --table T --into URL`.

* PostgreSQL: `pg_dump --format=custom --table=…` of the scratch database piped into
  `pg_restore --no-owner` on the target: the table with its data, indexes, constraints,
  triggers, defaults and owned sequences (a foreign key to a table the target lacks is
  reported, not fatal);
* MySQL/MariaDB: `mariadb-dump --skip-add-drop-table DB T…` of the scratch database piped
  into the client on the target (foreign keys checked off during the load, as in any dump);
* SQLite: the table's CREATE statement, its rows, then its indexes and triggers, in one
  transaction, from the snapshot copy ATTACHed to the target file.
A table the target already has is refused before anything is written: `db recover` brings
rows back into an existing table.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pymysql  # type: ignore[import-untyped]
from psycopg import sql

from safehold.errors import UsageError
from safehold.redaction import redact_secrets
from safehold.sources.base import RestoreReport
from safehold.sources.dbtools import RestoreError, child_env, feed_tool, tool_output
from safehold.sources.mysql import MyLocation, MysqlSource, connect, option_file, quote_identifier
from safehold.sources.postgres import PgLocation, PostgresSource


def _refuse_existing(existing: Sequence[str], target: str) -> None:
    if existing:
        raise UsageError(
            f"{target} already has table(s) {', '.join(existing)}: nothing was restored",
            hint="restore into another database, drop the table there first, or bring "
            "rows back into the existing table with `safehold db recover`",
        )


# ----- PostgreSQL ---------------------------------------------------------------------------


def _pg_connect(location: PgLocation, dbname: str) -> psycopg.Connection[Any]:
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 30}
    if location.password is not None:
        kwargs["password"] = location.password
    try:
        return psycopg.connect(location.conninfo(dbname), **kwargs)
    except psycopg.Error as err:
        raise RestoreError(
            f"cannot connect to database {dbname} at {location.redacted}: "
            + redact_secrets(str(err).strip(), [location.password])
        ) from None


def _scalar(conn: psycopg.Connection[Any], query: Any, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return row[0] if row else None


def pg_copy_tables(
    source: PostgresSource,
    scratch: PgLocation,
    scratch_db: str,
    target: PgLocation,
    tables: Sequence[str],  # schema.table
) -> RestoreReport:
    if not target.dbname:
        raise UsageError(
            f"{target.redacted} names no database",
            hint="give the database the table(s) go into: postgresql://…/DBNAME",
        )
    dst = target.dbname
    try:
        conn = _pg_connect(target, dst)
    except RestoreError:
        with _pg_connect(target, "postgres") as maintenance:
            maintenance.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dst))
            )
        conn = _pg_connect(target, dst)
    with conn:
        existing = [
            t
            for t in tables
            if _scalar(
                conn, "SELECT to_regclass(%s)", sql.Identifier(*t.split(".", 1)).as_string(conn)
            )
        ]
        _refuse_existing(existing, f"database {dst} at {target.redacted}")
        schemas = sorted({t.split(".", 1)[0] for t in tables})
        for schema in schemas:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    names = [sql.Identifier(*t.split(".", 1)).as_string(None) for t in tables]
    dump = [
        source.tool("pg_dump"),
        "--format=custom",
        "--compress=0",
        "--no-password",
        *(f"--table={n}" for n in names),
        f"--dbname={scratch.conninfo(scratch_db)}",
    ]
    load = [
        source.tool("pg_restore"),
        "--no-owner",
        "--no-acl",
        "--no-password",
        f"--dbname={target.conninfo(dst)}",
    ]
    secrets = [scratch.password, target.password]
    report = RestoreReport(source.name, target.redacted)
    dump_env = child_env({"PGPASSWORD": scratch.password or ""})
    load_env = child_env({"PGPASSWORD": target.password or ""})
    try:
        with tool_output(
            dump, env=dump_env, what="pg_dump of the table(s)", secrets=secrets
        ) as stream:
            feed_tool(
                load,
                env=load_env,
                what=f"pg_restore into database {dst}",
                secrets=secrets,
                write=lambda stdin: shutil.copyfileobj(stream, stdin),
            )
    except RestoreError as err:
        if "errors ignored on restore" not in err.message:
            raise
        report.warnings.append(err.message)  # e.g. a foreign key to a table not restored
    with _pg_connect(target, dst) as conn:
        count = sql.SQL("SELECT count(*) FROM {}")
        counts = {
            t: int(_scalar(conn, count.format(sql.Identifier(*t.split(".", 1))))) for t in tables
        }
    report.details["tables"] = counts
    return report


# ----- MySQL / MariaDB ----------------------------------------------------------------------


def my_copy_tables(
    source: MysqlSource,
    scratch: MyLocation,
    scratch_db: str,
    target: MyLocation,
    tables: Sequence[str],
) -> RestoreReport:
    if not target.dbname:
        raise UsageError(
            f"{target.redacted} names no database",
            hint="give the database the table(s) go into: mysql://…/DBNAME",
        )
    dst = target.dbname
    secrets = [scratch.password, target.password]
    try:
        conn = connect(target, None)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(dst)}")
                cursor.execute(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                    (dst,),
                )
                present = {str(r[0]) for r in cursor.fetchall()}
        finally:
            conn.close()
    except pymysql.err.MySQLError as err:
        raise RestoreError(
            f"cannot prepare database {dst} at {target.redacted}: "
            + redact_secrets(str(err), secrets)
        ) from None
    _refuse_existing([t for t in tables if t in present], f"database {dst} at {target.redacted}")
    report = RestoreReport(source.name, target.redacted)
    with option_file(scratch.password) as dump_first, option_file(target.password) as load_first:
        dump = [
            source.dump_tool,
            *dump_first,
            *scratch.tool_args(),
            "--skip-add-drop-table",
            "--single-transaction",
            "--triggers",
            "--hex-blob",
            "--no-tablespaces",
            "--skip-dump-date",
            "--default-character-set=utf8mb4",
            scratch_db,
            *tables,
        ]
        load = [
            source.client_tool,
            *load_first,
            *target.tool_args(),
            "--binary-mode",
            "--default-character-set=utf8mb4",
            dst,
        ]
        env = child_env({}, drop=("MYSQL_PWD", "MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT"))
        with tool_output(dump, env=env, what="the dump of the table(s)", secrets=secrets) as stream:
            stderr = feed_tool(
                load,
                env=env,
                what=f"the load into database {dst}",
                secrets=secrets,
                write=lambda stdin: shutil.copyfileobj(stream, stdin),
            )
    if stderr:
        report.warnings.append(redact_secrets(stderr, secrets))
    conn = connect(target, dst)
    try:
        counts: dict[str, int] = {}
        with conn.cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT COUNT(*) FROM {quote_identifier(table)}")
                counts[table] = int(cursor.fetchone()[0])
    finally:
        conn.close()
    report.details["tables"] = counts
    return report


# ----- SQLite -------------------------------------------------------------------------------


def sqlite_copy_tables(
    name: str, snapshot_copy: Path, target: Path, tables: Sequence[str]
) -> RestoreReport:
    target.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(target), isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS snap", (str(snapshot_copy),))
        present = {
            str(r[0])
            for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")
        }
        _refuse_existing([t for t in tables if t in present], str(target))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                quoted = '"' + table.replace('"', '""') + '"'
                row = conn.execute(
                    "SELECT sql FROM snap.sqlite_master WHERE type = 'table' AND name = ?", (table,)
                ).fetchone()
                conn.execute(str(row[0]))
                conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM snap.{quoted}")
                extra = conn.execute(
                    "SELECT sql FROM snap.sqlite_master WHERE tbl_name = ? AND type IN "
                    "('index', 'trigger') AND sql IS NOT NULL ORDER BY type",
                    (table,),
                ).fetchall()
                for (statement,) in extra:
                    conn.execute(str(statement))
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
        counts = {
            t: int(
                conn.execute(
                    f'SELECT count(*) FROM main."{t.replace(chr(34), 2 * chr(34))}"'
                ).fetchone()[0]
            )
            for t in tables
        }
    except sqlite3.Error as err:
        raise RestoreError(f"copying table(s) into {target} failed: {err}") from None
    finally:
        conn.close()
    report = RestoreReport(name, str(target))
    report.details["tables"] = counts
    return report
