"""Copy whole tables from a restored snapshot copy (a scratch database or file) into a target
database: `safehold restore SNAPSHOT --source db --table T --into URL`.

* PostgreSQL, straight from the snapshot's dump, no scratch server: the dump's table of
  contents (`pg_restore --list`) is filtered to the entries of the chosen tables (the table,
  its data, defaults, constraints, foreign keys, triggers, comments, policies, its indexes
  and the sequences it owns, found from the schema-only script `pg_restore --schema-only`
  prints), plus what those use: the types and domains, the functions (defaults, generated
  columns, checks, triggers), the sequences behind `nextval(...)`, the dump's extensions,
  followed to a fixed point; whatever of those the target has already is kept as it is.
  Then `pg_restore --use-list --no-owner --no-acl` loads only those into the target
  (a foreign key to a table the target lacks is reported, not fatal);
* MySQL/MariaDB: `mariadb-dump --skip-add-drop-table DB T…` of the scratch database piped
  into the client on the target (foreign keys checked off during the load, as in any dump);
* SQLite: the table's CREATE statement, its rows, then its indexes and triggers, in one
  transaction, from the snapshot copy ATTACHed to the target file.
A table the target already has is refused before anything is written: `db recover` brings
rows back into an existing table.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql  # type: ignore[import-untyped]
from psycopg import sql

from safehold.errors import UsageError
from safehold.redaction import redact_secrets
from safehold.sources.base import RestoreReport
from safehold.sources.dbtools import (
    RestoreError,
    child_env,
    feed_tool,
    run_tool,
    tool_failure,
    tool_output,
)
from safehold.sources.mysql import MyLocation, MysqlSource, connect, option_file, quote_identifier
from safehold.sources.postgres import PgLocation, PostgresSource
from safehold.sources.rowdiff import table_selected


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


def _table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    """`table` is schema.table, unquoted."""
    name = sql.Identifier(*table.split(".", 1)).as_string(conn)
    return _scalar(conn, "SELECT to_regclass(%s)", name) is not None


def _pg_prepare(target: PgLocation, tables: Sequence[str]) -> str:
    """Create the target database when missing and the tables' schemas; refuse a target that
    has one of the tables already. Returns the database name."""
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
        existing = [t for t in tables if _table_exists(conn, t)]
        _refuse_existing(existing, f"database {dst} at {target.redacted}")
        for schema in sorted({t.split(".", 1)[0] for t in tables}):
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    return dst


def _pg_counts(
    target: PgLocation, dst: str, tables: Sequence[str], warnings: Sequence[str]
) -> dict[str, int]:
    """Rows per restored table; a table pg_restore could not create is a failure naming
    pg_restore's messages."""
    with _pg_connect(target, dst) as conn:
        missing = [t for t in tables if not _table_exists(conn, t)]
        if missing:
            raise RestoreError(
                f"table(s) {', '.join(missing)} could not be created in database {dst}"
                + (f": {warnings[-1]}" if warnings else "")
            )
        count = sql.SQL("SELECT count(*) FROM {}")
        return {
            t: int(_scalar(conn, count.format(sql.Identifier(*t.split(".", 1))))) for t in tables
        }


# `pg_restore --list` lines: "ID; CATALOG OID TYPE SCHEMA NAME OWNER" (NAME may have spaces)
_TOC_TYPES = sorted(
    ["TABLE", "TABLE DATA", "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "DEFAULT",
     "CONSTRAINT", "FK CONSTRAINT", "INDEX", "TRIGGER", "COMMENT", "POLICY", "ROW SECURITY",
     "RULE", "INDEX ATTACH", "STATISTICS", "TYPE", "DOMAIN", "FUNCTION", "PROCEDURE",
     "AGGREGATE", "EXTENSION", "SCHEMA"],
    key=len, reverse=True,
)  # fmt: skip
# the schema-only script's header of each entry
_HEADER = re.compile(r"^-- Name: (.*); Type: (.*); Schema: (.*); Owner: .*$", re.MULTILINE)
_IDENT = r'(?:"(?:[^"]|"")*"|[^\s."(),;]+)'
_QUALIFIED = re.compile(rf"({_IDENT})\.({_IDENT})")


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


@dataclass(frozen=True)
class TocEntry:
    line: str
    kind: str
    schema: str
    name: str


def parse_toc(listing: str) -> list[TocEntry]:
    entries = []
    for line in listing.splitlines():
        if not line or line.startswith(";"):
            continue
        _, _, rest = line.partition("; ")
        words = rest.split(" ", 2)  # catalog oid, oid, the rest
        if len(words) < 3:
            continue
        tail = words[2]
        kind = next((k for k in _TOC_TYPES if tail.startswith(k + " ")), None)
        if kind is None:
            continue
        parts = tail[len(kind) + 1 :].split(" ")
        if len(parts) < 3:
            continue
        entries.append(TocEntry(line, kind, parts[0], " ".join(parts[1:-1])))
    return entries


def _statements(script: str) -> dict[tuple[str, str, str], str]:
    """(type, schema, name) -> the SQL of that entry in a schema-only script."""
    found: dict[tuple[str, str, str], str] = {}
    headers = list(_HEADER.finditer(script))
    for number, header in enumerate(headers):
        end = headers[number + 1].start() if number + 1 < len(headers) else len(script)
        name, kind, schema = header.group(1), header.group(2), header.group(3)
        found[(kind, schema, name)] = script[header.end() : end]
    return found


def _mentions(text: str, before: str, schema: str, table: str) -> bool:
    """Whether `text` has `before schema.table` (pg_dump's quoting undone)."""
    for match in re.finditer(before + r"\s+(?:ONLY\s+)?" + _QUALIFIED.pattern, text):
        if (_unquote(match.group(1)), _unquote(match.group(2))) == (schema, table):
            return True
    return False


# what the chosen entries' SQL may use, besides the tables' own entries
_USED_KINDS = ("TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE")
_NEXTVAL = re.compile(r"nextval\('((?:[^']|'')*)'")
_QUALIFIED_CALL = re.compile(rf"({_IDENT})\.({_IDENT})\s*\(")


def _routine_name(entry: TocEntry) -> str:
    return entry.name.split("(", 1)[0]


def _names_used(text: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[str]]:
    """(qualified names, qualified names called as functions, nextval() sequence texts)."""
    qualified = {(_unquote(m.group(1)), _unquote(m.group(2))) for m in _QUALIFIED.finditer(text)}
    called = {(_unquote(m.group(1)), _unquote(m.group(2))) for m in _QUALIFIED_CALL.finditer(text)}
    sequences = {m.group(1).replace("''", "'") for m in _NEXTVAL.finditer(text)}
    return qualified, called, sequences


def _sequence_key(text: str) -> tuple[str, str] | None:
    match = _QUALIFIED.fullmatch(text)
    return (_unquote(match.group(1)), _unquote(match.group(2))) if match else None


def _dependencies(
    entries: Sequence[TocEntry], chosen: Sequence[TocEntry], text: Any
) -> list[TocEntry]:
    """The types, domains, routines and sequences the chosen entries use, and what those use
    in turn (a domain over an enum, a function returning a type), to a fixed point."""
    extra: list[TocEntry] = []
    taken = set(map(id, chosen))
    pending = list(chosen)
    while pending:
        qualified: set[tuple[str, str]] = set()
        called: set[tuple[str, str]] = set()
        sequences: set[tuple[str, str]] = set()
        for entry in pending:
            q, c, seqs = _names_used(text(entry))
            qualified |= q
            called |= c
            sequences |= {k for k in map(_sequence_key, seqs) if k is not None}
        pending = []
        for entry in entries:
            if id(entry) in taken:
                continue
            if entry.kind in ("TYPE", "DOMAIN"):
                use = (entry.schema, entry.name) in qualified
            elif entry.kind in ("FUNCTION", "PROCEDURE", "AGGREGATE"):
                use = (entry.schema, _routine_name(entry)) in called
            elif entry.kind in ("SEQUENCE", "SEQUENCE SET"):
                use = (entry.schema, entry.name) in sequences
            else:
                use = False
            if use:
                taken.add(id(entry))
                extra.append(entry)
                pending.append(entry)
    return extra


def toc_for_tables(
    entries: Sequence[TocEntry], script: str, tables: Sequence[str]
) -> list[TocEntry]:
    """The entries of the dump that make up `tables` (schema.table) and what they use, in
    the dump's order (which is dependency order)."""
    sql_of = _statements(script)
    wanted = {tuple(t.split(".", 1)) for t in tables}

    def text(entry: TocEntry) -> str:
        return sql_of.get((entry.kind, entry.schema, entry.name), "")

    sequences: set[tuple[str, str]] = set()
    for entry in entries:  # the sequences the tables own (serial) or use (identity)
        if entry.kind in ("SEQUENCE OWNED BY", "SEQUENCE") and any(
            _mentions(text(entry), "OWNED BY", s, t) or _mentions(text(entry), "ALTER TABLE", s, t)
            for s, t in wanted
        ):
            sequences.add((entry.schema, entry.name))
    chosen = []
    for entry in entries:
        table_of = entry.name.split(" ", 1)[0]
        if entry.kind in ("TABLE", "TABLE DATA"):
            keep = (entry.schema, entry.name) in wanted
        elif entry.kind in ("DEFAULT", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "POLICY",
                            "ROW SECURITY", "RULE"):  # fmt: skip
            keep = (entry.schema, table_of) in wanted
        elif entry.kind == "INDEX":
            keep = any(_mentions(text(entry), "ON", s, t) for s, t in wanted)
        elif entry.kind in ("SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET"):
            keep = (entry.schema, entry.name) in sequences
        elif entry.kind == "COMMENT":
            what, _, name = entry.name.partition(" ")  # TABLE "user", COLUMN "user".name
            column = _QUALIFIED.fullmatch(name)
            keep = (what == "TABLE" and (entry.schema, _unquote(name)) in wanted) or (
                what == "COLUMN"
                and column is not None
                and (entry.schema, _unquote(column.group(1))) in wanted
            )
        else:
            keep = entry.kind == "EXTENSION"  # CREATE EXTENSION IF NOT EXISTS: harmless
        if keep:
            chosen.append(entry)
    used = {id(e) for e in _dependencies(entries, chosen, text)}
    picked = {id(e) for e in chosen} | used
    return [e for e in entries if id(e) in picked]


def _already_there(conn: psycopg.Connection[Any], entry: TocEntry) -> bool:
    """Whether the target database has this type, routine, sequence or extension already."""
    if entry.kind == "EXTENSION":
        found = _scalar(conn, "SELECT 1 FROM pg_extension WHERE extname = %s", entry.name)
        return found is not None
    name = sql.Identifier(entry.schema).as_string(conn) + "."
    if entry.kind in ("TYPE", "DOMAIN"):
        return _scalar(conn, "SELECT to_regtype(%s)", name + _quoted(conn, entry.name)) is not None
    if entry.kind in ("FUNCTION", "PROCEDURE", "AGGREGATE"):
        routine, _, args = entry.name.partition("(")
        signature = name + _quoted(conn, routine) + "(" + args
        return _scalar(conn, "SELECT to_regprocedure(%s)", signature) is not None
    if entry.kind in ("SEQUENCE", "SEQUENCE SET"):
        return _scalar(conn, "SELECT to_regclass(%s)", name + _quoted(conn, entry.name)) is not None
    return False


def _quoted(conn: psycopg.Connection[Any], name: str) -> str:
    return sql.Identifier(name).as_string(conn)


_SHARED_KINDS = ("EXTENSION", *_USED_KINDS)


def _skip_present(
    target: PgLocation, dst: str, entries: Sequence[TocEntry], tables: Sequence[str]
) -> tuple[list[TocEntry], list[str]]:
    """Drop the shared objects (types, routines, extensions, free-standing sequences) the
    target has already: restoring them again would fail. Creates their schemas."""
    owned = {tuple(t.split(".", 1)) for t in tables}
    kept: list[TocEntry] = []
    present: list[str] = []
    with _pg_connect(target, dst) as conn:
        for schema in sorted({e.schema for e in entries if e.kind in _USED_KINDS}):
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        sequences_in_target = set()
        for entry in entries:
            shared = entry.kind in _SHARED_KINDS or (
                entry.kind in ("SEQUENCE", "SEQUENCE SET")
                and (entry.schema, entry.name) not in owned
            )
            if entry.kind == "SEQUENCE SET" and (entry.schema, entry.name) in sequences_in_target:
                present.append(f"{entry.kind} {entry.schema} {entry.name}")
                continue
            if shared and _already_there(conn, entry):
                if entry.kind == "SEQUENCE":
                    sequences_in_target.add((entry.schema, entry.name))
                present.append(f"{entry.kind} {entry.schema} {entry.name}")
                continue
            kept.append(entry)
    return kept, present


def _read_toc(
    source: PostgresSource, dump: Path, work: Path, env: dict[str, str], secrets: list[str | None]
) -> tuple[Path, Path, Path]:
    """Write the dump's table of contents (`pg_restore --list`) and its schema-only script
    into `work`; returns (listing, script, the path for the chosen list)."""
    listing, script, chosen_list = (work / n for n in ("toc", "schema.sql", "use"))
    for argv, what in (
        ([source.tool("pg_restore"), "--list", f"--file={listing}", str(dump)],
         "pg_restore --list of the dump"),
        ([source.tool("pg_restore"), "--schema-only", f"--file={script}", str(dump)],
         "pg_restore --schema-only of the dump"),
    ):  # fmt: skip
        code, _, stderr = run_tool(argv, env=env, what=what)
        if code != 0:
            raise RestoreError(tool_failure(what, code, stderr, secrets))
    return listing, script, chosen_list


def _restore_listed(
    source: PostgresSource,
    dump: Path,
    chosen_list: Path,
    lines: Sequence[str],
    target: PgLocation,
    dst: str,
    env: dict[str, str],
    secrets: list[str | None],
    what: str,
    extra: list[str],
) -> list[str]:
    """`pg_restore --use-list` of only `lines` of the dump's table of contents into `dst`,
    without owners or grants. Returns pg_restore's message as a warning when it only
    ignored errors (it went on); raises RestoreError when it stopped."""
    chosen_list.write_text("".join(line + "\n" for line in lines), "utf-8")
    argv = [
        source.tool("pg_restore"), "--no-owner", "--no-acl", "--no-password", *extra,
        f"--use-list={chosen_list}", f"--dbname={target.conninfo(dst)}", str(dump),
    ]  # fmt: skip
    code, _, stderr = run_tool(argv, env=env, what=what)
    if code == 0:
        return []
    message = tool_failure(what, code, stderr, secrets)
    if "errors ignored on restore" not in stderr:
        raise RestoreError(message)
    return [message]


def pg_restore_tables(
    source: PostgresSource,
    dump: Path,
    target: PgLocation,
    tables: Sequence[str],  # schema.table
) -> RestoreReport:
    """Only `tables` of the custom-format `dump` into `target` (see the module docstring)."""
    dst = _pg_prepare(target, tables)
    secrets = [source.location.password, target.password]
    env = child_env({"PGPASSWORD": target.password or ""})
    report = RestoreReport(source.name, target.redacted)
    with tempfile.TemporaryDirectory(prefix="safehold-tables-") as work:
        listing, script, chosen_list = _read_toc(source, dump, Path(work), env, secrets)
        entries, present = _skip_present(
            target,
            dst,
            toc_for_tables(
                parse_toc(listing.read_text("utf-8", "replace")),
                script.read_text("utf-8", "replace"),
                tables,
            ),
            tables,
        )
        report.warnings += _restore_listed(  # e.g. a foreign key to a table not restored
            source, dump, chosen_list, [e.line for e in entries], target, dst, env, secrets,
            f"pg_restore into database {dst}", [],
        )  # fmt: skip
    report.details["tables"] = _pg_counts(target, dst, tables, report.warnings)
    report.details["toc_entries"] = [f"{e.kind} {e.schema} {e.name}" for e in entries]
    report.details["already_there"] = present
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


# ----- PostgreSQL: a snapshot copy to compare against (db diff, db recover) -----------------

# what a row comparison never reads, and what costs most of a restore after the data: the
# secondary indexes (built row by row after the load), the foreign keys (each one validated
# with a join), triggers, and the materialized views' data (their queries run again)
_NOT_FOR_COMPARE = frozenset(
    {"INDEX", "INDEX ATTACH", "FK CONSTRAINT", "TRIGGER", "STATISTICS", "POLICY",
     "ROW SECURITY", "RULE"}
)  # fmt: skip
_TOC_KIND = re.compile(
    r"^\d+; \d+ \d+ (MATERIALIZED VIEW DATA|EVENT TRIGGER|PUBLICATION|SUBSCRIPTION) "
)


def toc_for_compare(
    listing: str, script: str, tables: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """The lines of `pg_restore --list` a row comparison needs: every table with its
    columns, defaults, sequences and types, the data (of `tables` only, when given: names
    as `--table` takes them), and each table's PRIMARY KEY, nothing else of the post-data
    section. Returns (lines kept, what was left out, as "KIND schema name")."""
    sql_of = _statements(script)
    parents = _partition_parents(sql_of)
    dropped: dict[str, TocEntry] = {}
    entries = parse_toc(listing)
    primary = {  # the primary keys' indexes (named as their constraints)
        (e.schema, e.name.split(" ", 1)[-1])
        for e in entries
        if e.kind == "CONSTRAINT" and "PRIMARY KEY" in sql_of.get((e.kind, e.schema, e.name), "")
    }
    for entry in entries:
        drop = entry.kind in _NOT_FOR_COMPARE
        if entry.kind == "CONSTRAINT":  # PRIMARY KEY, UNIQUE, EXCLUDE, a NOT VALID CHECK
            drop = (entry.schema, entry.name.split(" ", 1)[-1]) not in primary
        elif entry.kind == "INDEX ATTACH":  # a partition's primary key into its parent's
            drop = (entry.schema, entry.name) not in primary
        elif entry.kind == "TABLE DATA" and tables:
            drop = not _data_wanted(f"{entry.schema}.{entry.name}", tables, parents)
        if drop:
            dropped[entry.line] = entry
    kept: list[str] = []
    left_out = [f"{e.kind} {e.schema} {e.name}" for e in dropped.values()]
    for line in listing.splitlines():
        if not line or line.startswith(";") or line in dropped:
            continue
        other = _TOC_KIND.match(line)
        if other:
            left_out.append(line.split(" ", 3)[3])
            continue
        kept.append(line)
    return kept, left_out


_ATTACH = re.compile(
    rf"ALTER TABLE (?:ONLY )?{_QUALIFIED.pattern}\s+ATTACH PARTITION {_QUALIFIED.pattern}"
)


def _partition_parents(sql_of: dict[tuple[str, str, str], str]) -> dict[str, str]:
    """partition -> the table it is attached to (schema.table), from the TABLE ATTACH
    entries of the schema-only script."""
    parents: dict[str, str] = {}
    for (kind, _, _), text in sql_of.items():
        if kind != "TABLE ATTACH":
            continue
        for match in _ATTACH.finditer(text):
            parent = f"{_unquote(match.group(1))}.{_unquote(match.group(2))}"
            parents[f"{_unquote(match.group(3))}.{_unquote(match.group(4))}"] = parent
    return parents


def _data_wanted(name: str, tables: Sequence[str], parents: dict[str, str]) -> bool:
    """A table's rows are wanted when it, or the partitioned table it belongs to, is."""
    seen: set[str] = set()
    while name not in seen:
        if table_selected(name, tables):
            return True
        seen.add(name)
        name = parents.get(name, name)
    return False


def pg_restore_for_compare(
    source: PostgresSource,
    dump: Path,
    target: PgLocation,
    dst: str,
    *,
    encoding: str | None = None,
    tables: Sequence[str] = (),
    jobs: int = 2,
) -> RestoreReport:
    """The custom-format `dump` into a new database `dst` of a scratch server, with only
    what a row comparison reads (`toc_for_compare`), `jobs` tables loaded at once. Owners
    and grants are not restored: the scratch server has only its own user."""
    secrets = [source.location.password, target.password]
    env = child_env({"PGPASSWORD": target.password or ""})
    report = RestoreReport(source.name, target.redacted)
    with _pg_connect(target, "postgres") as conn:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dst))
        if encoding:
            statement = sql.SQL("{} ENCODING {}").format(statement, sql.Literal(encoding))
        conn.execute(statement)
    with tempfile.TemporaryDirectory(prefix="safehold-compare-") as work:
        listing, script, chosen_list = _read_toc(source, dump, Path(work), env, secrets)
        kept, left_out = toc_for_compare(
            listing.read_text("utf-8", "replace"), script.read_text("utf-8", "replace"), tables
        )
        report.warnings += _restore_listed(
            source, dump, chosen_list, kept, target, dst, env, secrets,
            f"pg_restore into scratch database {dst}", [f"--jobs={max(1, jobs)}"],
        )  # fmt: skip
    report.details["left_out"] = left_out
    return report
