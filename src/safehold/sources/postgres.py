"""PostgreSQL: logical dumps streamed into the snapshot, restored into a new database.

Backup, per database, into `/<source>/<db>.pgdump`:
  1. open a connection in a REPEATABLE READ, READ ONLY transaction and export its snapshot
     (`pg_export_snapshot()`);
  2. run `pg_dump --format=custom --compress=0 --snapshot=<id>`, its stdout streamed into the
     repository (no temp file; uncompressed so that day-to-day dumps deduplicate; the
     repository compresses);
  3. meanwhile count the rows of every user table (exact `count(*)`, schema-qualified) in the
     same transaction, which stays open until pg_dump has finished. The manifest's row counts
     therefore describe exactly the data in the dump, also while the application writes.
With `include_globals`, `/<source>/globals.sql` holds `pg_dumpall --globals-only` (roles,
tablespaces; `--no-role-passwords` when the user is not a superuser).

Which databases: `databases` if given, else the database of the URL, else (a server URL) every
database that accepts connections except the templates.

Restore (`restore(repo, snapshot, manifest, target)`), target a `postgresql://` URL:
  * with a database name: ONE backed-up database is restored into it, the only one, or the
    one named by `?source_db=NAME` when the backup holds several;
  * without a database name (a server URL): EVERY backed-up database (or only `?source_db`)
    is restored under its own name.
A target database is created when missing (from template0, with the source's encoding; the
user needs CREATEDB) and refused when it exists and already has tables. The dump is written
to a temp file (pg_restore needs a seekable file for `--jobs`; deleted afterwards), its blobs
read and verified on 3 threads, and restored with `pg_restore --jobs=N --verbose`, keeping
every object's owner. Before that, the roles the
target lacks are created from the snapshot's globals.sql (`pg_accounts.replay_roles`: only
missing roles, never altering or dropping one); `AccountOptions(roles=False)` (`--no-roles`)
skips that, `AccountOptions(owners=False)` (`--no-owner`) restores with `--no-owner`.
Every table's rows are counted (exact `count(*)`) and compared with the manifest: a plain
table as soon as pg_restore reports its data item finished, on a connection of its own while
the other tables load and the indexes build; partitions, inheritance parents and children
(whose rows other items may bring) and anything not reported afterwards. Then the owners,
grants, default privileges and policies recorded at backup time (`pg_accounts`) with the
target's; a mismatch does not raise: the report has `details["verified"] = False` (rows) or
`details["accounts"]["ok"] = False` and warnings, and the caller decides
(`dbtools.require_verified` raises RestoreVerificationError).

Passwords reach the tools only through PGPASSWORD in their environment; messages, manifests
and argv never hold them.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from safehold.errors import UsageError
from safehold.fs.archiver import BackupItem
from safehold.redaction import location_secrets, mask_location, redact_secrets
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources import pg_accounts
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
    normalize_host,
    pop_query_param,
    restore_databases,
    run_tool,
    spawn,
    tool_failure,
    tool_output,
    tool_version,
)
from safehold.sources.process import STDERR_LIMIT, kill_process

DUMP_SUFFIX = ".pgdump"
GLOBALS_FILE = "globals.sql"
MAINTENANCE_DB = "postgres"

_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _refuse_a_split_password(redacted: str, url: str, params: dict[str, str]) -> None:
    """Refuse a URL that libpq reads differently from how a person wrote it: a password
    with a raw `/` or a missing `@` ends up as host, port or database name. Connecting would
    fail anyway, with an error naming that part; say why, and never show it."""
    secrets = location_secrets(url)
    misread = [key for key, value in params.items() if value and any(s in value for s in secrets)]
    if misread:
        parts = ", ".join("database" if key == "dbname" else key for key in misread)
        raise UsageError(
            f"invalid PostgreSQL URL {redacted}: part of its password would be read as the {parts}",
            hint="write postgresql://user:password@host:port/database: add the @ if it is "
            "missing, and percent-encode a / @ : ? or # in the password (/ as %2F)",
        )


@dataclass
class PgLocation:
    """A parsed postgresql:// URL: libpq parameters without the password and database."""

    params: dict[str, str]
    password: str | None
    dbname: str | None
    source_db: str | None
    redacted: str

    @classmethod
    def parse(cls, url: str) -> PgLocation:
        redacted = mask_location(url)
        if not re.match(r"^postgres(ql)?://", url, re.IGNORECASE):
            raise UsageError(
                f"{redacted} is not a PostgreSQL URL",
                hint="use postgresql://user:password@host:port/database",
            )
        clean, source_db = pop_query_param(url, "source_db")
        try:
            params = conninfo_to_dict(clean)
        except psycopg.Error as err:
            problem = redact_secrets(str(err), location_secrets(url))
            raise UsageError(
                f"invalid PostgreSQL URL {redacted}: {problem}",
                hint="use postgresql://user:password@host:port/database "
                "(percent-encode a / @ : ? or # in the password)",
            ) from None
        values = {k: str(v) for k, v in params.items() if v is not None}
        password = values.pop("password", None)
        _refuse_a_split_password(redacted, url, values)
        dbname = values.pop("dbname", None) or None
        shown = redact_secrets(mask_location(clean), [password])
        return cls(values, password, dbname, source_db or None, shown)

    def conninfo(self, dbname: str) -> str:
        """A libpq connection string for `dbname`, without the password."""
        return make_conninfo("", **self.params, dbname=dbname)

    @property
    def server(self) -> tuple[frozenset[str], str]:
        hosts = self.params.get("host") or self.params.get("hostaddr") or ""
        port = self.params.get("port") or os.environ.get("PGPORT") or "5432"
        normalized = frozenset(normalize_host(h) for h in hosts.split(",")) or frozenset({""})
        return normalized, port.split(",")[0].strip()

    def same_server(self, other: PgLocation) -> bool:
        (hosts, port), (other_hosts, other_port) = self.server, other.server
        return bool(hosts & other_hosts) and port == other_port


def find_bin_dir(bin_dir: str | None, tool: str = "pg_dump") -> str | None:
    """Where the tools live: `bin_dir`, else the newest /usr/lib/postgresql/*/bin that has
    `tool`, else None (found on PATH)."""
    if bin_dir:
        return bin_dir
    found: list[tuple[int, str]] = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = os.path.basename(os.path.dirname(path))
        if version.isdigit() and os.access(os.path.join(path, tool), os.X_OK):
            found.append((int(version), path))
    return max(found)[1] if found else None


def tool_major(version_line: str) -> int | None:
    """`pg_dump (PostgreSQL) 15.18 (Debian …)` -> 15; None when there is no version."""
    match = re.search(r"\b(\d+)(?:\.\d+)*", version_line.partition(")")[2] or version_line)
    return int(match.group(1)) if match else None


def server_major(version_num: int) -> int:
    """`server_version_num` -> the major version: 170002 -> 17, 90624 -> 9 (9.6 is 9)."""
    return version_num // 10000


def dump_tool_problem(server: int, tool: int | None, tool_path: str) -> tuple[str, str] | None:
    """Why `tool_path` (pg_dump of major `tool`) cannot dump a server of major `server`, and
    the exact fix; None when it can. pg_dump refuses servers newer than itself."""
    fix = (
        f"install postgresql-client-{server} (Debian/Ubuntu, from apt.postgresql.org); "
        f"safehold uses /usr/lib/postgresql/{server}/bin when present"
    )
    if tool is None:
        return f"{tool_path} does not run", fix
    if tool >= server:
        return None
    return f"pg_dump {tool} is older than the PostgreSQL {server} server and cannot dump it", fix


@dataclass(frozen=True)
class ServerProbe:
    """What `probe()` learned from a database server: its version and the dump tool's."""

    server_version: str
    tool_version: str
    problem: tuple[str, str] | None  # (why the dump tool cannot dump this server, the fix)


class PostgresSource:
    """Logical backups of PostgreSQL databases (see the module docstring)."""

    kind = "postgres"

    def __init__(
        self,
        name: str,
        url: str,
        databases: list[str] | None = None,
        include_globals: bool = True,
        jobs: int = 4,
        bin_dir: str | None = None,
    ) -> None:
        if not valid_source_name(name):
            raise UsageError(f"invalid source name {name!r}", hint="use a-z, 0-9, - and _")
        self.name = name
        self.location = PgLocation.parse(url)
        if self.location.source_db:
            raise UsageError("source_db= belongs in a restore target URL, not a source URL")
        self.databases = list(databases) if databases else None
        self.include_globals = include_globals
        self.jobs = max(1, int(jobs))
        self.bin_dir = find_bin_dir(bin_dir)
        self._lock = threading.Lock()
        self._results: dict[str, dict[str, Any]] = {}
        self._globals: dict[str, Any] | None = None
        self._server: dict[str, Any] = {}
        self._staged: dict[tuple[str, str], str] = {}  # (snapshot id, path) -> temp file

    # ----- tools and connections --------------------------------------------------------

    def tool(self, name: str) -> str:
        if self.bin_dir:
            return os.path.join(self.bin_dir, name)
        return shutil.which(name) or name

    @functools.cached_property
    def pg_dump_version(self) -> str:
        return tool_version(self.tool("pg_dump"))

    def _secrets(self, *locations: PgLocation) -> list[str | None]:
        return [self.location.password, *(loc.password for loc in locations)]

    def _env(self, location: PgLocation) -> dict[str, str]:
        extra = {"PGAPPNAME": "safehold"}
        if location.password is not None:
            extra["PGPASSWORD"] = location.password
        extra.setdefault("PGCONNECT_TIMEOUT", os.environ.get("PGCONNECT_TIMEOUT", "30"))
        return child_env(extra)

    def pg_env(self, location: PgLocation | None = None) -> dict[str, str]:
        """The environment for a client tool run against `location` (default: the source)."""
        return self._env(location or self.location)

    def _connect(
        self,
        location: PgLocation,
        dbname: str,
        error: type[DatabaseError] = DumpError,
        autocommit: bool = True,
    ) -> psycopg.Connection[tuple[Any, ...]]:
        kwargs: dict[str, Any] = {"autocommit": autocommit, "application_name": "safehold"}
        if location.password is not None:
            kwargs["password"] = location.password
        if "connect_timeout" not in location.params:
            kwargs["connect_timeout"] = 30
        try:
            return psycopg.connect(location.conninfo(dbname), **kwargs)
        except psycopg.Error as err:
            raise error(
                f"cannot connect to database {dbname} at {location.redacted}: "
                + redact_secrets(str(err).strip(), self._secrets(location))
            ) from None

    def _require_dump_tool(self, version_num: int) -> None:
        """Refuse BEFORE the dump starts when pg_dump is older than the server. A tool whose
        version cannot be read runs anyway: its own error says more than a guess would."""
        tool = tool_major(self.pg_dump_version)
        problem = dump_tool_problem(server_major(version_num), tool, self.tool("pg_dump"))
        if problem is not None and tool is not None:
            raise DumpError(f"{self.location.redacted}: {problem[0]}", hint=problem[1])

    def probe(self) -> ServerProbe:
        """Connect as a backup would, run `SELECT 1`, read the server version and compare it
        with pg_dump's. Raises DumpError (redacted) when the server does not answer."""
        db = self.location.dbname or (self.databases or [MAINTENANCE_DB])[0]
        with self._connect(self.location, db) as conn:
            row = conn.execute(
                "SELECT 1, current_setting('server_version'), "
                "current_setting('server_version_num')::int"
            ).fetchone()
        assert row is not None
        major, tool = server_major(int(row[2])), self.pg_dump_version
        problem = dump_tool_problem(major, tool_major(tool), self.tool("pg_dump"))
        return ServerProbe(str(row[1]), tool, problem)

    def _database_names(self) -> list[str]:
        if self.databases:
            return list(self.databases)
        if self.location.dbname:
            return [self.location.dbname]
        with self._connect(self.location, MAINTENANCE_DB) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                "ORDER BY datname"
            ).fetchall()
        return [str(row[0]) for row in rows]

    # ----- Source protocol: backup ------------------------------------------------------

    def items(self) -> list[BackupItem]:
        with self._lock:
            self._results = {}
            self._globals = None
            self._server = {}
        items = [
            BackupItem(
                item_path(self.name, dump_file_name(db, DUMP_SUFFIX)),
                stream=functools.partial(self._dump_database, db),
                parents_on_disk=False,
            )
            for db in self._database_names()
        ]
        if self.include_globals:
            items.append(
                BackupItem(
                    item_path(self.name, GLOBALS_FILE),
                    stream=self._dump_globals,
                    parents_on_disk=False,
                )
            )
        return items

    @contextlib.contextmanager
    def _dump_database(self, db: str) -> Iterator[BinaryIO]:
        what = f"pg_dump of database {db}"
        conn = self._connect(self.location, db, autocommit=False)
        pool = ThreadPoolExecutor(1, thread_name_prefix="pg-count")
        try:
            try:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
                conn.execute("SET LOCAL row_security = off")  # as pg_dump: all rows or error
                snapshot_row = conn.execute("SELECT pg_export_snapshot()").fetchone()
                info = conn.execute(
                    "SELECT current_setting('server_version'), "
                    "current_setting('server_version_num')::int, pg_encoding_to_char(encoding)"
                    " FROM pg_database WHERE datname = current_database()"
                ).fetchone()
            except psycopg.Error as err:
                raise DumpError(f"{what}: {redact_secrets(str(err), self._secrets())}") from None
            assert snapshot_row is not None and info is not None
            self._require_dump_tool(int(info[1]))
            counting = pool.submit(_counts_and_accounts, conn)
            argv = [
                self.tool("pg_dump"), "--format=custom", "--compress=0", "--no-password",
                f"--snapshot={snapshot_row[0]}", f"--dbname={self.location.conninfo(db)}",
            ]  # fmt: skip
            try:
                with tool_output(
                    argv, env=self._env(self.location), what=what, secrets=self._secrets()
                ) as stream:
                    yield cast(BinaryIO, stream)
            except BaseException:
                _cancel(conn)
                raise
            try:
                tables, accounts = counting.result()
            except psycopg.Error as err:
                raise DumpError(
                    f"counting the rows of database {db} failed: "
                    + redact_secrets(str(err), self._secrets())
                ) from None
        finally:
            pool.shutdown(wait=True)
            with contextlib.suppress(Exception):
                conn.close()
        with self._lock:
            self._server = {"server_version": info[0], "server_version_num": info[1]}
            self._results[db] = {
                "file": dump_file_name(db, DUMP_SUFFIX),
                "size": stream.size,
                "format": "custom",
                "compress": 0,
                "pg_dump_version": self.pg_dump_version,
                "encoding": info[2],
                "tables": tables,
                "rows": sum(tables.values()),
                "accounts": [list(fact) for fact in accounts],
            }

    @contextlib.contextmanager
    def _dump_globals(self) -> Iterator[BinaryIO]:
        db = self.location.dbname or MAINTENANCE_DB
        with self._connect(self.location, db) as conn:
            row = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            roles = pg_accounts.role_facts(conn)
        superuser = bool(row and row[0])
        argv = [
            self.tool("pg_dumpall"), "--globals-only", "--no-password", f"--database={db}",
            f"--dbname={self.location.conninfo(db)}",
            *([] if superuser else ["--no-role-passwords"]),
        ]  # fmt: skip
        with tool_output(
            argv, env=self._env(self.location), what="pg_dumpall --globals-only",
            secrets=self._secrets(),
        ) as stream:  # fmt: skip
            yield cast(BinaryIO, stream)
        with self._lock:
            self._globals = {
                "file": GLOBALS_FILE, "size": stream.size, "role_passwords": superuser,
                "roles": [list(fact) for fact in roles],
            }  # fmt: skip

    def manifest(self) -> Manifest:
        with self._lock:
            return {
                "kind": self.kind,
                "location": self.location.redacted,
                **self._server,
                "pg_dump_version": self.pg_dump_version,
                "format": "custom",
                "include_globals": self.include_globals,
                "globals": dict(self._globals) if self._globals else None,
                "databases": {db: dict(info) for db, info in sorted(self._results.items())},
            }

    # ----- Source protocol: restore -----------------------------------------------------

    def production_location(self) -> str:
        return self.location.redacted

    def _source_databases(self) -> list[str] | None:
        """The databases this source reads; None = all of the server's."""
        if self.databases:
            return list(self.databases)
        return [self.location.dbname] if self.location.dbname else None

    def _is_production(self, target: PgLocation, dbname: str | None) -> bool:
        if not self.location.same_server(target):
            return False
        source_dbs = self._source_databases()
        return source_dbs is None or dbname is None or dbname in source_dbs

    def is_production_target(self, target: str) -> bool:
        """Same server (loopback names and socket dirs count as one host; same port) and a
        database this source backs up. A server URL without a database, or any database on
        the server of a source that backs up all databases, counts as production too."""
        location = PgLocation.parse(target)
        if location.dbname is None and location.source_db is not None:
            return self._is_production(location, location.source_db)
        return self._is_production(location, location.dbname)

    def live_counts(self, databases: list[str]) -> dict[str, dict[str, int]]:
        """Exact row counts of the live `databases` now, keyed `schema.table` as the manifest
        records them (the incident scope; restores to production say what they would lose)."""
        counts: dict[str, dict[str, int]] = {}
        for db in databases:
            with self._connect(self.location, db) as conn:
                try:
                    counts[db] = _table_counts(conn)
                except psycopg.Error as err:
                    raise DumpError(
                        f"counting the rows of database {db} failed: "
                        + redact_secrets(str(err), self._secrets())
                    ) from None
        return counts

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
        `accounts`: create missing roles first (`roles`), keep owners (`owners`)."""
        location = PgLocation.parse(target)
        replayed: pg_accounts.ReplayOutcome | None = None

        def restore_one(
            src: str, info: dict[str, Any], dst: str, report: RestoreReport, several: bool
        ) -> None:
            nonlocal replayed
            if replayed is None and accounts.roles and manifest.get("globals"):
                replayed = self._replay_roles(repo, snapshot, location, report)
            self._restore_database(repo, snapshot, src, info, location, dst, report,
                                   prefix=several, overwrite=overwrite,
                                   owners=accounts.owners,
                                   manifest_has_roles=bool(manifest.get("globals")))  # fmt: skip

        report = restore_databases(
            self.name, location.redacted, location.dbname, location.source_db, manifest,
            lambda dst: self._is_production(location, dst), restore_one, overwrite,
        )  # fmt: skip
        self._check_roles(location, manifest, report)
        return report

    @contextlib.contextmanager
    def staged(self, repo: Repository, snapshot: Snapshot, manifest: Manifest) -> Iterator[None]:
        """Read the dump files of `manifest`'s databases out of the repository into temp
        files now, before the target can be reached (a drill does it while its scratch server
        starts); a restore of `snapshot` inside the block uses them instead of reading the
        repository. The files are removed when the block ends."""
        staged: dict[tuple[str, str], str] = {}
        try:
            for info in (manifest.get("databases") or {}).values():
                path = f"/{self.name}/{info['file']}"
                fd, name = tempfile.mkstemp(prefix="safehold-pg-", suffix=DUMP_SUFFIX)
                staged[(snapshot.id, path)] = name
                with os.fdopen(fd, "wb") as out:
                    dump_file(repo, snapshot, path, out, workers=DUMP_READERS)
            with self._lock:
                self._staged.update(staged)
            yield
        finally:
            with self._lock:
                for key in staged:
                    self._staged.pop(key, None)
            for name in staged.values():
                with contextlib.suppress(OSError):
                    os.unlink(name)

    def _replay_roles(
        self, repo: Repository, snapshot: Snapshot, location: PgLocation, report: RestoreReport
    ) -> pg_accounts.ReplayOutcome:
        """Create the roles the target lacks from the snapshot's globals.sql."""
        buffer = io.BytesIO()
        dump_file(repo, snapshot, f"/{self.name}/{GLOBALS_FILE}", buffer)
        roles = pg_accounts.parse_globals(buffer.getvalue().decode("utf-8", "replace"))
        with self._maintenance_connection(location) as conn:
            outcome = pg_accounts.replay_roles(conn, roles)
        secrets = self._secrets(location)
        report.details["roles"] = {"created": outcome.created, "existing": outcome.existing}
        created = ", ".join(outcome.created) or "none"
        report.summary.append(
            f"roles: created {created} from {GLOBALS_FILE} "
            f"({len(outcome.existing)} already there, left as they are)"
        )
        for problem in outcome.problems:
            report.warnings.append(f"{GLOBALS_FILE}: {redact_secrets(problem, secrets)}")
        return outcome

    def _check_roles(self, location: PgLocation, manifest: Manifest, report: RestoreReport) -> None:
        """The roles and memberships of the backup against the target's."""
        recorded = (manifest.get("globals") or {}).get("roles")
        if recorded is None:  # no globals, or a backup from before they were recorded
            return
        with self._maintenance_connection(location) as conn:
            present = pg_accounts.role_facts(conn)
        missing = pg_accounts.missing_facts([tuple(f) for f in recorded], present)
        self._record_missing(missing, "", report)

    def _record_missing(
        self, missing: list[pg_accounts.Fact], label: str, report: RestoreReport
    ) -> None:
        checked = report.details.setdefault("accounts", {"ok": True, "missing": []})
        checked["checked"] = True
        for fact in missing:
            line = f"{label}missing after the restore: {pg_accounts.describe_fact(fact)}"
            checked["missing"].append(line)
            report.warnings.append(line)
        checked["ok"] = not checked["missing"]

    def _restore_database(
        self,
        repo: Repository,
        snapshot: Snapshot,
        src: str,
        info: dict[str, Any],
        location: PgLocation,
        dst: str,
        report: RestoreReport,
        prefix: bool,
        overwrite: bool = False,
        owners: bool = True,
        manifest_has_roles: bool = True,
    ) -> None:
        started = time.monotonic()
        secrets = self._secrets(location)
        created = self._prepare_target(location, dst, info.get("encoding"), overwrite)
        path = f"/{self.name}/{info['file']}"
        what = f"pg_restore into database {dst}"
        counter = _EarlyCounts(lambda: self._connect(location, dst, error=RestoreError))
        with contextlib.ExitStack() as stack:
            with self._lock:
                dump = self._staged.get((snapshot.id, path))
            if dump is None:
                handle = stack.enter_context(
                    tempfile.NamedTemporaryFile(prefix="safehold-pg-", suffix=DUMP_SUFFIX)
                )
                dump_file(repo, snapshot, path, cast(BinaryIO, handle), workers=DUMP_READERS)
                handle.flush()
                dump = handle.name
            counter.expect(self._data_items(dump, location))
            argv = [
                self.tool("pg_restore"), f"--jobs={self.jobs}", "--no-password", "--verbose",
                *([] if owners else ["--no-owner"]),
                f"--dbname={location.conninfo(dst)}", dump,
            ]  # fmt: skip
            if overwrite:  # drop and recreate what the dump holds; other objects stay
                argv[1:1] = ["--clean", "--if-exists"]
            try:
                returncode, stderr = _run_pg_restore(
                    argv, env=_c_messages(self._env(location)), what=what,
                    on_finished=counter.finished,
                )  # fmt: skip
            finally:
                early = counter.close()
        if returncode != 0:
            message = tool_failure(what, returncode, stderr, secrets)
            if "errors ignored on restore" not in stderr:
                raise RestoreError(message)
            report.warnings.append(message)  # e.g. GRANTs to roles that do not exist here
        with self._connect(location, dst, error=RestoreError) as conn:
            try:
                restored = _table_counts(conn, known=early)
                present = pg_accounts.account_facts(conn)
            except psycopg.Error as err:
                raise RestoreError(
                    f"counting rows in database {dst} failed: {redact_secrets(str(err), secrets)}"
                ) from None
        report.details.setdefault("counted_during_restore", {})[dst] = len(early)
        expected: dict[str, int] = info.get("tables") or {}
        tables, verified = compare_counts(expected, restored, f"{dst}: " if prefix else "", report)
        recorded = info.get("accounts")
        if recorded is not None and not manifest_has_roles:
            report.details["accounts_not_compared"] = (
                "owners and grants not compared: this backup holds no roles (globals = false), "
                "so they may not exist here"
            )
        elif recorded is not None:  # backups before safehold recorded grants have none
            facts = [tuple(fact) for fact in recorded]
            if not owners:  # owners are the restoring user's by request
                facts = pg_accounts.without_owners(facts)
            missing = pg_accounts.missing_facts(facts, present)
            self._record_missing(missing, f"{dst}: ", report)
        seconds = time.monotonic() - started
        report.details["databases"][dst] = {
            "source_database": src,
            "created": created,
            "tables": tables,
            "rows": sum(v for v in restored.values()),
            "seconds": round(seconds, 3),
            "verified": verified,
        }

    def _data_items(self, dump: str, location: PgLocation) -> dict[int, tuple[str, str]]:
        """The TABLE DATA items of a dump file by dump id: (schema, table), from
        `pg_restore --list` (names with spaces are left out: they are counted afterwards)."""
        argv = [self.tool("pg_restore"), "--list", dump]
        returncode, out, _ = run_tool(argv, env=_c_messages(self._env(location)),
                                      what="pg_restore --list")  # fmt: skip
        if returncode != 0:
            return {}  # the restore itself says what is wrong with the file
        items: dict[int, tuple[str, str]] = {}
        for line in out.splitlines():
            match = _LIST_TABLE_DATA.match(line)
            if match:
                items[int(match.group(1))] = (match.group(2), match.group(3))
        return items

    def _prepare_target(
        self, location: PgLocation, dst: str, encoding: str | None, overwrite: bool = False
    ) -> bool:
        """Create the target database when missing; refuse one that already has tables.
        Returns whether it was created."""
        maintenance = self._maintenance_connection(location)
        with maintenance as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dst,)).fetchone()
            if exists is None:
                statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                    sql.Identifier(dst)
                )
                if encoding:
                    statement = sql.SQL("{} ENCODING {}").format(statement, sql.Literal(encoding))
                try:
                    conn.execute(statement)
                except psycopg.Error as err:
                    raise RestoreError(
                        f"cannot create database {dst} at {location.redacted}: "
                        + redact_secrets(str(err).strip(), self._secrets(location)),
                        hint="create it yourself (empty), or give the user CREATEDB",
                    ) from None
                return True
        with self._connect(location, dst, error=RestoreError) as conn:
            if not overwrite and _table_counts(conn, count=False):
                raise RestoreError(
                    f"database {dst} at {location.redacted} already has tables",
                    hint="restore into a new or empty database",
                )
        return False

    def prepare_restore_target(self, location: PgLocation, dst: str) -> bool:
        """Create database `dst` at `location` when missing; refuse one with tables. Returns
        whether it was created (point-in-time restores copy into it)."""
        return self._prepare_target(location, dst, None)

    def _maintenance_connection(self, location: PgLocation) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return self._connect(location, MAINTENANCE_DB, error=RestoreError)
        except RestoreError:
            return self._connect(location, "template1", error=RestoreError)


def _cancel(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Stop a running query (the row count) of a connection, from another thread."""
    with contextlib.suppress(Exception):
        cancel = getattr(conn, "cancel_safe", None) or conn.cancel
        cancel()


def _counts_and_accounts(
    conn: psycopg.Connection[tuple[Any, ...]],
) -> tuple[dict[str, int], list[pg_accounts.Fact]]:
    """Row counts and the owners/grants/policies of a database, in one transaction."""
    return _table_counts(conn), pg_accounts.account_facts(conn)


def _table_counts(
    conn: psycopg.Connection[tuple[Any, ...]],
    count: bool = True,
    known: dict[str, int] | None = None,
) -> dict[str, int]:
    """Exact row counts of every user table, keyed `schema.table` (0s when not `count`);
    the tables in `known` were counted already (while the restore ran)."""
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_TABLES_SQL).fetchall():
        value = 0
        key = f"{schema}.{table}"
        if known is not None and key in known:
            value = known[key]
        elif count:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            value = int(row[0]) if row else 0
        counts[key] = value
    return counts


# `pg_restore --list`: "1234; 0 16390 TABLE DATA public users owner"
_LIST_TABLE_DATA = re.compile(r"^(\d+); \d+ \d+ TABLE DATA (\S+) (\S+) (\S+)$")
# `pg_restore --verbose` (messages in English, see _c_messages): a worker finished an item
_FINISHED_ITEM = re.compile(r"^pg_restore: finished item (\d+) TABLE DATA (.*)$")
# the other `--verbose` lines: progress, not problems (errors and warnings say so)
_VERBOSE_LINE = re.compile(r"^pg_restore: (?!error:|warning:|detail:|hint:|fatal:)")
_STDERR_LINES = 200

# Blobs decoded ahead while a dump is written to its temp file (dump_file's workers).
DUMP_READERS = 3

# Which tables a count can trust as soon as their own data item is done: a plain table, not
# a partition or inheritance child (their rows may come through another item, e.g. with
# --load-via-partition-root) and without children (their count includes the children's).
_ALONE_SQL = """
SELECT NOT c.relhassubclass AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'r'
"""


def _c_messages(env: dict[str, str]) -> dict[str, str]:
    """`env` with the tool's messages in English (its progress lines are parsed)."""
    env = dict(env)
    lc_all = env.pop("LC_ALL", None)
    if lc_all:
        env.setdefault("LC_CTYPE", lc_all)
    env["LC_MESSAGES"] = "C"
    return env


def _run_pg_restore(
    argv: list[str], *, env: dict[str, str], what: str, on_finished: Callable[[int, str], None]
) -> tuple[int, str]:
    """Run pg_restore --verbose: `on_finished(dump_id, tag)` hears each TABLE DATA item as
    soon as its worker has finished (committed) it. Returns the exit status and the stderr
    lines that are not progress (errors, warnings and their context), the last of them."""
    proc = spawn(argv, env=env, what=what, stdout=subprocess.DEVNULL, error=RestoreError)
    kept: deque[str] = deque(maxlen=_STDERR_LINES)
    assert proc.stderr is not None
    try:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            finished = _FINISHED_ITEM.match(line)
            if finished:
                on_finished(int(finished.group(1)), finished.group(2))
            elif not _VERBOSE_LINE.match(line):
                kept.append(line)
    except BaseException:
        kill_process(proc)
        raise
    finally:
        with contextlib.suppress(OSError):
            proc.stderr.close()
    returncode = proc.wait()
    return returncode, "\n".join(kept).strip()[-STDERR_LIMIT:]


class _EarlyCounts:
    """Counts each table's rows on its own thread and connection as soon as pg_restore has
    finished its data, while the other tables load and the indexes build: the exact
    `count(*)` the verification needs, without a pass over every table afterwards. A table
    it cannot trust yet (see _ALONE_SQL) or fails to count is left to the final count."""

    def __init__(self, connect: Callable[[], psycopg.Connection[tuple[Any, ...]]]) -> None:
        self._connect = connect
        self._items: dict[int, tuple[str, str]] = {}
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._counts: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def expect(self, items: dict[int, tuple[str, str]]) -> None:
        self._items = items
        if items:
            self._thread = threading.Thread(target=self._run, name="safehold-pg-count", daemon=True)
            self._thread.start()

    def finished(self, dump_id: int, tag: str) -> None:
        table = self._items.get(dump_id)
        if table is not None and self._thread is not None and table[1] == tag.strip():
            self._queue.put(table)

    def close(self) -> dict[str, int]:
        """Wait for the counts queued so far; the tables counted, `schema.table` -> rows."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        return dict(self._counts)

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        try:
            while (table := self._queue.get()) is not None:
                try:
                    conn = conn or self._connect()
                    self._count(conn, *table)
                except (psycopg.Error, RestoreError):
                    with contextlib.suppress(Exception):
                        if conn is not None:
                            conn.close()
                    conn = None  # counted afterwards instead
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _count(self, conn: psycopg.Connection[tuple[Any, ...]], schema: str, table: str) -> None:
        alone = conn.execute(_ALONE_SQL, (schema, table)).fetchone()
        if not alone or not alone[0]:
            return
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        if row is not None:
            self._counts[f"{schema}.{table}"] = int(row[0])
