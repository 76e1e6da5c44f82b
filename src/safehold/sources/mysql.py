"""MySQL / MariaDB: logical SQL dumps streamed into the snapshot, restored into a new database.

Backup, per database, into `/<source>/<db>.sql`: `mariadb-dump` (or `mysqldump` when that is
what is installed) with `--single-transaction --routines --triggers --events --hex-blob
--quick --no-tablespaces --skip-dump-date`, its stdout streamed into the repository (no temp
file). The database is dumped without `--databases`, so the dump holds no CREATE DATABASE /
USE and restores into any database name.

Row counts (consistency). MySQL cannot share a snapshot between sessions the way PostgreSQL
exports one, so a second connection counting rows in its own REPEATABLE READ transaction
would see a slightly different moment than the dump while the application writes, and
FLUSH TABLES WITH READ LOCK needs the RELOAD privilege (refused on most managed servers) and
stalls every writer. Instead the rows are counted in the dump itself, as it streams past:
every `INSERT INTO `t` VALUES (...),(...);` statement's row tuples (string literals skipped;
routine and trigger bodies between `DELIMITER ;;` lines ignored), and every `CREATE TABLE`
registers a table (0 rows until data follows). So the manifest's counts are exactly the
rows of the dump: those of mysqldump's own `--single-transaction` snapshot, with no window,
no extra privilege and no lock. That snapshot is consistent for InnoDB tables; MyISAM tables
are not transactional, and DDL during the dump is not isolated (MySQL's documented limits).

Restore: the target is a mysql:// or mariadb:// URL. With a database name, ONE backed-up
database goes into it (the only one, or `?source_db=NAME`); a server URL without a database
restores every backed-up database under its own name (see `dbtools.restore_plan`). A target
database is created (with the source's character set and collation) when missing and refused
when it already has tables. The SQL is streamed from the snapshot into the `mariadb`/`mysql`
client's stdin (no temp file); then every table's rows are counted and compared with the
manifest: a mismatch is reported (`details["verified"] = False`, warnings), not raised.
Accounts: `/<source>/users.json` holds the server's users and grants (`my_accounts`); a
restore creates the missing users with a grant on a restored database and applies those
grants on it (never altering an existing user; `AccountOptions(roles=False)`, `--no-roles`,
creates nobody), then checks every recorded grant is there (`details["accounts"]`).
Views, routines and triggers keep their DEFINER: restoring them as another user needs the
SET USER (MariaDB) / SET_USER_ID (MySQL) privilege or a matching account.

The password reaches the tools only through a temporary option file (mode 0600, deleted when
the tool has finished), never argv; messages and the manifest never hold it.

URL forms: `mysql://user:password@host:3306/db`, `mariadb://…`, and a unix socket with
`?unix_socket=/run/mysqld/mysqld.sock` (or `?socket=`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql  # type: ignore[import-untyped]

from safehold.errors import UsageError
from safehold.fs.archiver import BackupItem
from safehold.redaction import redact_secrets, redact_url
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources import my_accounts
from safehold.sources.base import (
    KEEP_ACCOUNTS,
    AccountOptions,
    Manifest,
    RestoreReport,
    item_path,
    valid_source_name,
)
from safehold.sources.dbtools import (
    DatabaseError,
    DumpError,
    RestoreError,
    child_env,
    compare_counts,
    dump_file_name,
    feed_tool,
    normalize_host,
    pop_query_param,
    restore_databases,
    tool_output,
    tool_version,
)

DUMP_SUFFIX = ".sql"
SYSTEM_DATABASES = frozenset({"information_schema", "performance_schema", "mysql", "sys"})
_SOCKET_PARAMS = ("unix_socket", "socket")
_TLS_PARAMS = ("ssl", "ssl_ca", "ssl_cert", "ssl_key")
_TRUE, _FALSE = ("1", "true", "yes", "on", "required"), ("0", "false", "no", "off", "disabled")


@dataclass(frozen=True)
class MyTLS:
    """TLS from the URL query: `?ssl=true` (encrypted, certificate not checked), `ssl_ca=PATH`
    (encrypted and the server's certificate and name verified), `ssl_cert`/`ssl_key` (a client
    certificate); `?ssl=false` turns TLS off."""

    enabled: bool | None = None  # None: the tools' default
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def from_params(cls, params: dict[str, str], redacted: str) -> MyTLS:
        flag = params.get("ssl", "").lower()
        if flag and flag not in _TRUE + _FALSE:
            raise UsageError(
                f"ssl={flag} in {redacted} is neither true nor false",
                hint="write ?ssl=true (or ?ssl_ca=/path/to/ca.pem to verify the server)",
            )
        files = {k: params.get(f"ssl_{k}") or None for k in ("ca", "cert", "key")}
        enabled: bool | None = None
        if flag in _FALSE:
            enabled = False
        elif flag or any(files.values()):
            enabled = True
        return cls(enabled, files["ca"], files["cert"], files["key"])

    def tool_args(self) -> list[str]:
        """mariadb/mysql client options (MariaDB spelling; MySQL 8 reads --ssl-ca too)."""
        if self.enabled is None:
            return []
        if not self.enabled:
            return ["--skip-ssl"]
        args = ["--ssl"]
        args += [f"--ssl-{k}={v}" for k, v in (("ca", self.ca), ("cert", self.cert),
                                                ("key", self.key)) if v]  # fmt: skip
        if self.ca:
            args.append("--ssl-verify-server-cert")
        return args

    def pymysql_options(self) -> dict[str, Any]:
        """PyMySQL's `ssl` argument: verified against `ca` when given, else encrypted only."""
        if self.enabled is None:
            return {}
        if not self.enabled:
            return {"ssl_disabled": True}
        ssl: dict[str, Any] = {"check_hostname": bool(self.ca)}
        ssl.update({k: v for k, v in (("ca", self.ca), ("cert", self.cert), ("key", self.key))
                    if v})  # fmt: skip
        return {"ssl": ssl}


@dataclass
class MyLocation:
    """A parsed mysql:// / mariadb:// URL."""

    user: str | None
    password: str | None
    host: str | None
    port: int
    socket: str | None
    dbname: str | None
    source_db: str | None
    redacted: str
    tls: MyTLS = MyTLS()

    @classmethod
    def parse(cls, url: str) -> MyLocation:
        clean, source_db = pop_query_param(url, "source_db")
        redacted = redact_url(clean)
        try:
            parts = urlsplit(clean)
            port = parts.port or 3306
        except ValueError:
            raise UsageError(f"invalid MySQL URL {redacted}") from None
        if parts.scheme.lower() not in ("mysql", "mariadb"):
            raise UsageError(
                f"{redacted} is not a MySQL/MariaDB URL",
                hint="use mysql://user:password@host:3306/database (or mariadb://)",
            )
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(params) - set(_SOCKET_PARAMS) - set(_TLS_PARAMS)
        if unknown:
            raise UsageError(
                f"unsupported parameter(s) {', '.join(sorted(unknown))} in {redacted}",
                hint="supported: unix_socket=PATH (or socket=PATH), ssl=true, ssl_ca=PATH, "
                "ssl_cert=PATH, ssl_key=PATH, source_db=NAME (restores)",
            )
        return cls(
            user=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            socket=params.get("unix_socket") or params.get("socket") or None,
            dbname=unquote(parts.path.lstrip("/")) or None,
            source_db=source_db or None,
            redacted=redacted,
            tls=MyTLS.from_params(params, redacted),
        )

    def tool_args(self) -> list[str]:
        """Connection options for the command-line tools (no password)."""
        args = [f"--user={self.user}"] if self.user else []
        if self.socket:
            return [*args, "--protocol=SOCKET", f"--socket={self.socket}"]
        host = self.host or "localhost"
        return [*args, "--protocol=TCP", f"--host={host}", f"--port={self.port}",
                *self.tls.tool_args()]  # fmt: skip

    def same_server(self, other: MyLocation) -> bool:
        if normalize_host(self.socket or self.host) != normalize_host(other.socket or other.host):
            return False
        if self.socket or other.socket:  # a socket has no port: assume the same server
            return True
        return self.port == other.port


def _option_value(value: str) -> str:
    """A value for a MySQL option file: double-quoted, with the escapes the reader knows."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        .replace("\r", "\\r").replace("\t", "\\t")
    )  # fmt: skip
    return f'"{escaped}"'


@contextlib.contextmanager
def option_file(password: str | None) -> Iterator[list[str]]:
    """The first argument(s) for a client tool: a temporary 0600 option file holding the
    password (deleted on leaving), or --no-defaults. Either way no other option file is read,
    so /etc/mysql settings cannot redirect the tool to another server."""
    if password is None:
        yield ["--no-defaults"]
        return
    fd, path = tempfile.mkstemp(prefix="safehold-my-", suffix=".cnf")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"[client]\npassword={_option_value(password)}\n")
        yield [f"--defaults-file={path}"]
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ----- counting rows in a dump --------------------------------------------------------------

_CREATE_TABLE = re.compile(rb"CREATE TABLE `((?:[^`]|``)+)`")
_INSERT = re.compile(rb"(?:INSERT|REPLACE)(?: IGNORE)? INTO `((?:[^`]|``)+)`")
_STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'", re.DOTALL)


def _identifier(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "replace")


class DumpRowCounter:
    """Counts the rows of each table in a mysqldump / mariadb-dump stream as it passes.

    The dump is line-structured: a string literal never spans lines (newlines inside data are
    escaped), an INSERT statement starts at the beginning of a line, and its row tuples follow
    on the same line (MySQL, older MariaDB) or one per line (MariaDB ≥ 10.11.8). With string
    literals removed, every `(` inside an INSERT's VALUES opens one row: values are literals
    only (numbers, NULL, 'strings', 0x… with --hex-blob). The statement ends at a line ending
    in `;`. Routine, trigger and event bodies (between `DELIMITER ;;` lines) are skipped.
    """

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline
        self._insert: str | None = None  # table of the INSERT statement being read
        self._in_routine = False

    def feed(self, data: bytes | memoryview) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        while True:
            hint = max(pos, self._scanned - 1)  # where an unseen newline can start
            if self._insert is not None:
                # inside an INSERT's rows: the statement ends at the first ";" + newline (a
                # newline is never inside a string); count whole blocks of lines at once
                end = buffer.find(b";\n", hint)
                if end >= 0:
                    self._count(bytes(buffer[pos : end + 1]))
                    pos = end + 2
                    continue
                last = buffer.rfind(b"\n", hint)
                if last >= 0:
                    self._count(bytes(buffer[pos : last + 1]))
                    pos = last + 1
                break
            newline = buffer.find(b"\n", hint)
            if newline < 0:
                break
            self._line(bytes(buffer[pos:newline]))
            pos = newline + 1
        if pos:
            del buffer[:pos]
        self._scanned = len(buffer)

    def finish(self) -> dict[str, int]:
        if self._buffer:
            rest = bytes(self._buffer)
            self._buffer.clear()
            self._scanned = 0
            if self._insert is not None:
                self._count(rest)
            else:
                self._line(rest)
        return dict(self.tables)

    def _line(self, line: bytes) -> None:
        if self._insert is not None:
            self._count(line)
            return
        if self._in_routine:
            if line.rstrip() == b"DELIMITER ;":
                self._in_routine = False
            return
        if line.startswith((b"INSERT ", b"REPLACE ")):
            match = _INSERT.match(line)
            if match is None:
                return
            values = line.find(b" VALUES", match.end())
            if values < 0:
                return
            self._insert = _identifier(match.group(1))
            self.tables.setdefault(self._insert, 0)
            self._count(line[values + len(b" VALUES") :])
        elif line.startswith(b"CREATE TABLE `"):
            match = _CREATE_TABLE.match(line)
            if match is not None:
                self.tables.setdefault(_identifier(match.group(1)), 0)
        elif line.startswith(b"DELIMITER ") and line.rstrip() != b"DELIMITER ;":
            self._in_routine = True

    def _count(self, part: bytes) -> None:
        assert self._insert is not None
        if b"'" in part:
            part = _STRING.sub(b"", part)
        self.tables[self._insert] += part.count(b"(")
        if part.rstrip().endswith(b";"):
            self._insert = None


# ----- the source ---------------------------------------------------------------------------


def _find_tool(bin_dir: str | None, names: tuple[str, ...]) -> str:
    for name in names:
        if bin_dir:
            path = os.path.join(bin_dir, name)
            if os.access(path, os.X_OK):
                return path
        else:
            found = shutil.which(name)
            if found:
                return found
    return os.path.join(bin_dir, names[0]) if bin_dir else names[0]


class MysqlSource:
    """Logical backups of MySQL / MariaDB databases (see the module docstring)."""

    kind = "mysql"

    def __init__(
        self,
        name: str,
        url: str,
        databases: list[str] | None = None,
        bin_dir: str | None = None,
    ) -> None:
        if not valid_source_name(name):
            raise UsageError(f"invalid source name {name!r}", hint="use a-z, 0-9, - and _")
        self.name = name
        self.location = MyLocation.parse(url)
        if self.location.source_db:
            raise UsageError("source_db= belongs in a restore target URL, not a source URL")
        self.databases = list(databases) if databases else None
        self.dump_tool = _find_tool(bin_dir, ("mariadb-dump", "mysqldump"))
        self.client_tool = _find_tool(bin_dir, ("mariadb", "mysql"))
        self._lock = threading.Lock()
        self._results: dict[str, dict[str, Any]] = {}
        self._server_version: str | None = None
        self._accounts: dict[str, Any] | None = None

    @functools.cached_property
    def dump_tool_version(self) -> str:
        return tool_version(self.dump_tool)

    def _secrets(self, *locations: MyLocation) -> list[str | None]:
        return [self.location.password, *(loc.password for loc in locations)]

    def _env(self) -> dict[str, str]:
        return child_env({}, drop=("MYSQL_PWD", "MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT"))

    def _connect(
        self, location: MyLocation, dbname: str | None, error: type[DatabaseError] = DumpError
    ) -> Any:
        try:
            return connect(location, dbname)
        except pymysql.err.MySQLError as err:
            where = f"database {dbname}" if dbname else "the server"
            raise error(
                f"cannot connect to {where} at {location.redacted}: "
                + redact_secrets(str(err), self._secrets(location))
            ) from None

    def _query(self, conn: Any, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with conn.cursor() as cursor:
            cursor.execute(query, args)
            return list(cursor.fetchall())

    def probe(self) -> tuple[str, str]:
        """Connect as a backup would and run `SELECT 1, VERSION()`: (server version, dump
        tool version, "" when the tool does not run). Raises DumpError (redacted)."""
        conn = self._connect(self.location, self.location.dbname)
        try:
            version = str(self._query(conn, "SELECT 1, VERSION()")[0][1])
        except pymysql.err.MySQLError as err:
            raise DumpError(redact_secrets(str(err), self._secrets())) from None
        finally:
            conn.close()
        return version, self.dump_tool_version

    def _database_names(self) -> list[str]:
        if self.databases:
            return list(self.databases)
        if self.location.dbname:
            return [self.location.dbname]
        conn = self._connect(self.location, None)
        try:
            rows = self._query(conn, "SHOW DATABASES")
        finally:
            conn.close()
        return sorted(str(r[0]) for r in rows if str(r[0]).lower() not in SYSTEM_DATABASES)

    # ----- Source protocol: backup ------------------------------------------------------

    def items(self) -> list[BackupItem]:
        with self._lock:
            self._results = {}
            self._accounts = None
        items = [
            BackupItem(
                item_path(self.name, dump_file_name(db, DUMP_SUFFIX)),
                stream=functools.partial(self._dump_database, db),
                parents_on_disk=False,
            )
            for db in self._database_names()
        ]
        users = item_path(self.name, my_accounts.USERS_FILE)
        return [*items, BackupItem(users, stream=self._dump_accounts, parents_on_disk=False)]

    @contextlib.contextmanager
    def _dump_accounts(self) -> Iterator[BinaryIO]:
        """users.json; an account the backup user may not read is recorded, not fatal: the
        data is what matters most."""
        conn = self._connect(self.location, None)
        try:
            document = my_accounts.read_accounts(conn)
            recorded: dict[str, Any] = {
                "file": my_accounts.USERS_FILE,
                "grants": my_accounts.recorded_grants(document),
            }
        except pymysql.err.MySQLError as err:
            document = {"format": 1, "users": [], "error": str(err)}
            recorded = {
                "file": my_accounts.USERS_FILE,
                "grants": {},
                "error": "users and grants not backed up: "
                + redact_secrets(str(err), self._secrets()),
            }
        finally:
            conn.close()
        yield io.BytesIO(my_accounts.encode(document))
        with self._lock:
            self._accounts = recorded

    def _dump_args(self) -> list[str]:
        args = [
            "--single-transaction", "--routines", "--triggers", "--events", "--hex-blob",
            "--quick", "--extended-insert", "--no-tablespaces", "--skip-dump-date",
            "--default-character-set=utf8mb4",
        ]  # fmt: skip
        if "mariadb" not in self.dump_tool_version.lower():
            args.append("--set-gtid-purged=OFF")  # MySQL: GTIDs would break restores elsewhere
        return args

    @contextlib.contextmanager
    def _dump_database(self, db: str) -> Iterator[BinaryIO]:
        what = f"{os.path.basename(self.dump_tool)} of database {db}"
        conn = self._connect(self.location, None)
        try:
            version = self._query(conn, "SELECT VERSION()")[0][0]
            schema = self._query(
                conn,
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (db,),
            )
        except pymysql.err.MySQLError as err:
            raise DumpError(f"{what}: {redact_secrets(str(err), self._secrets())}") from None
        finally:
            conn.close()
        if not schema:
            raise DumpError(
                f"{what}: database {db} does not exist at {self.location.redacted}",
                hint="check the source's databases",
            )
        counter = DumpRowCounter()
        with option_file(self.location.password) as first_args:
            argv = [
                self.dump_tool, *first_args, *self.location.tool_args(), *self._dump_args(), db,
            ]  # fmt: skip
            with tool_output(
                argv, env=self._env(), what=what, secrets=self._secrets(), on_data=counter.feed
            ) as stream:
                yield cast(BinaryIO, stream)
        tables = counter.finish()
        with self._lock:
            self._server_version = str(version)
            self._results[db] = {
                "file": dump_file_name(db, DUMP_SUFFIX),
                "size": stream.size,
                "format": "sql",
                "charset": schema[0][0],
                "collation": schema[0][1],
                "tables": tables,
                "rows": sum(tables.values()),
            }

    def manifest(self) -> Manifest:
        with self._lock:
            return {
                "kind": self.kind,
                "location": self.location.redacted,
                "server_version": self._server_version,
                "dump_tool": os.path.basename(self.dump_tool),
                "dump_tool_version": self.dump_tool_version,
                "format": "sql",
                "row_counts": "counted in the dump (its --single-transaction snapshot)",
                "databases": {db: dict(info) for db, info in sorted(self._results.items())},
                "accounts": dict(self._accounts) if self._accounts else None,
            }

    # ----- Source protocol: restore -----------------------------------------------------

    def production_location(self) -> str:
        return self.location.redacted

    def _is_production(self, target: MyLocation, dbname: str | None) -> bool:
        if not self.location.same_server(target):
            return False
        source_dbs = self.databases or ([self.location.dbname] if self.location.dbname else None)
        return source_dbs is None or dbname is None or dbname in source_dbs

    def is_production_target(self, target: str) -> bool:
        """Same server (loopback names and sockets count as one host; same port unless a
        socket is used) and a database this source backs up. A server URL without a database,
        or any database on the server of a source that backs up all databases, counts too."""
        location = MyLocation.parse(target)
        return self._is_production(location, location.dbname or location.source_db)

    def live_counts(self, databases: list[str]) -> dict[str, dict[str, int]]:
        """Exact row counts of the live `databases` now, keyed by table as the manifest
        records them (the incident scope; restores to production say what they would lose)."""
        return {db: self._table_counts(self.location, db) for db in databases}

    def restore(
        self,
        repo: Repository,
        snapshot: Snapshot,
        manifest: Manifest,
        target: str,
        *,
        overwrite: bool = False,
        accounts: AccountOptions = KEEP_ACCOUNTS,
    ) -> RestoreReport:
        """`overwrite` (only after a confirmed restore onto production and an evidence
        snapshot): restore into existing databases, replacing the objects the dump holds.
        `accounts.roles`: create the missing users with a grant on a restored database."""
        location = MyLocation.parse(target)
        recorded = manifest.get("accounts")
        document: dict[str, Any] | None = None

        def restore_one(
            src: str, info: dict[str, Any], dst: str, report: RestoreReport, several: bool
        ) -> None:
            nonlocal document
            self._restore_database(repo, snapshot, src, info, location, dst, report,
                                   prefix=several, overwrite=overwrite)  # fmt: skip
            if recorded and not recorded.get("error"):
                if document is None:
                    buffer = io.BytesIO()
                    dump_file(repo, snapshot, f"/{self.name}/{recorded['file']}", buffer)
                    document = json.loads(buffer.getvalue())
                self._restore_accounts(location, document, recorded, src, dst, report,
                                       accounts.roles)  # fmt: skip

        report = restore_databases(
            self.name, location.redacted, location.dbname, location.source_db, manifest,
            lambda dst: self._is_production(location, dst), restore_one, overwrite,
        )  # fmt: skip
        return report

    def _restore_database(
        self,
        repo: Repository,
        snapshot: Snapshot,
        src: str,
        info: dict[str, Any],
        location: MyLocation,
        dst: str,
        report: RestoreReport,
        prefix: bool,
        overwrite: bool = False,
    ) -> None:
        started = time.monotonic()
        secrets = self._secrets(location)
        created = self._prepare_target(
            location, dst, info.get("charset"), info.get("collation"), overwrite
        )
        path = f"/{self.name}/{info['file']}"
        what = f"{os.path.basename(self.client_tool)} restore into database {dst}"
        with option_file(location.password) as first_args:
            argv = [
                self.client_tool, *first_args, *location.tool_args(), "--binary-mode",
                "--default-character-set=utf8mb4", dst,
            ]  # fmt: skip
            stderr = feed_tool(
                argv, env=self._env(), what=what, secrets=secrets,
                write=lambda stdin: dump_file(repo, snapshot, path, stdin),
            )  # fmt: skip
        if stderr:
            report.warnings.append(f"{what}: {redact_secrets(stderr, secrets)}")
        restored = self._table_counts(location, dst)
        expected: dict[str, int] = info.get("tables") or {}
        tables, verified = compare_counts(expected, restored, f"{dst}: " if prefix else "", report)
        report.details["databases"][dst] = {
            "source_database": src,
            "created": created,
            "tables": tables,
            "rows": sum(restored.values()),
            "seconds": round(time.monotonic() - started, 3),
            "verified": verified,
        }

    def _restore_accounts(
        self, location: MyLocation, document: dict[str, Any], recorded: dict[str, Any],
        src: str, dst: str, report: RestoreReport, create: bool,
    ) -> None:  # fmt: skip
        """Users and grants of `src` onto `dst`, then the check that all recorded grants are
        there."""
        secrets = self._secrets(location)
        conn = self._connect(location, None, error=RestoreError)
        try:
            outcome = my_accounts.replay_accounts(conn, document, src, dst, create)
            missing = my_accounts.missing_grants(conn, recorded.get("grants") or {}, src, dst)
        finally:
            conn.close()
        checked = report.details.setdefault(
            "accounts", {"checked": True, "ok": True, "created": [], "missing": []}
        )
        checked["created"].extend(outcome.created)
        if outcome.created or outcome.granted:
            report.summary.append(
                f"{dst}: users created: {', '.join(outcome.created) or 'none'}; "
                f"{outcome.granted} grant(s) applied"
            )
        for problem in outcome.problems:
            report.warnings.append(f"{dst}: {redact_secrets(problem, secrets)}")
        for grant in missing:
            line = f"{dst}: missing after the restore: {grant}"
            checked["missing"].append(line)
            report.warnings.append(line)
        checked["ok"] = not checked["missing"]

    def _prepare_target(
        self,
        location: MyLocation,
        dst: str,
        charset: str | None,
        collation: str | None,
        overwrite: bool = False,
    ) -> bool:
        """Create the target database when missing; refuse one that already has tables."""
        conn = self._connect(location, None, error=RestoreError)
        try:
            exists = self._query(
                conn, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (dst,)
            )
            if exists and overwrite:  # the dump drops and recreates each of its tables
                return False
            if exists:
                tables = self._query(
                    conn,
                    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                    (dst,),
                )
                if tables and int(tables[0][0]) > 0:
                    raise RestoreError(
                        f"database {dst} at {location.redacted} already has tables",
                        hint="restore into a new or empty database",
                    )
                return False
            statement = f"CREATE DATABASE {quote_identifier(dst)}"
            if charset and re.fullmatch(r"\w+", charset):
                statement += f" CHARACTER SET {charset}"
            if collation and re.fullmatch(r"\w+", collation):
                statement += f" COLLATE {collation}"
            self._query(conn, statement)
            return True
        except pymysql.err.MySQLError as err:
            raise RestoreError(
                f"cannot create database {dst} at {location.redacted}: "
                + redact_secrets(str(err), self._secrets(location)),
                hint="create it yourself (empty), or grant the user CREATE",
            ) from None
        finally:
            conn.close()

    def _table_counts(self, location: MyLocation, dbname: str) -> dict[str, int]:
        conn = self._connect(location, dbname, error=RestoreError)
        try:
            names = self._query(
                conn,
                "SELECT TABLE_NAME FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                (dbname,),
            )
            counts: dict[str, int] = {}
            for (table,) in names:
                row = self._query(conn, f"SELECT COUNT(*) FROM {quote_identifier(str(table))}")
                counts[str(table)] = int(row[0][0])
            return counts
        except pymysql.err.MySQLError as err:
            raise RestoreError(
                f"counting rows in database {dbname} failed: "
                + redact_secrets(str(err), self._secrets(location))
            ) from None
        finally:
            conn.close()


def connect(location: MyLocation, dbname: str | None, **options: Any) -> Any:
    """A PyMySQL connection (autocommit, utf8mb4) to `location`; `options` go to PyMySQL.
    Raises pymysql.err.MySQLError; callers word the error."""
    kwargs: dict[str, Any] = {
        "user": location.user,
        # bytes: PyMySQL would encode a str password as latin-1, the mariadb/mysql
        # clients send UTF-8 (what the option file holds)
        "password": (location.password or "").encode("utf-8"),
        "database": dbname,
        "charset": "utf8mb4",
        "connect_timeout": 30,
        "autocommit": True,
        **location.tls.pymysql_options(),
        **options,
    }
    if location.socket:
        kwargs["unix_socket"] = location.socket
    else:
        kwargs["host"] = location.host or "localhost"
        kwargs["port"] = location.port
    return pymysql.connect(**kwargs)


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
