"""Scratch environments for drills: places to restore into that cannot be production.

* `ScratchRoot`: a private temp folder (0700 for files, SQLite and command output); the
  throwaway servers keep their data under it too, so one `rmtree` removes everything.
* `ThrowawayPostgres` / `ThrowawayMariadb`: a database server started from the local binaries
  in that folder, on a free loopback port, with a random password for a `safehold_drill` user.
* `NamedScratchServer`: a server the plan names (`[drill] scratch_postgres = …`), where the
  drill creates `safehold_drill_<token>_<db>` databases and drops them afterwards.

Every start registers its own undo before it can fail halfway, so `close()` (called from a
`finally`, also on Ctrl-C) always leaves no server process and no folder behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from psycopg.conninfo import make_conninfo

from safehold.errors import SafeholdError
from safehold.redaction import redact_url, register_secret

DRILL_USER = "safehold_drill"
DRILL_DB_PREFIX = "safehold_drill_"
START_TIMEOUT_S = 60.0


def _unused(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... the first that does not exist yet."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


class ScratchError(SafeholdError):
    """The scratch environment could not be built."""

    default_hint = (
        "drills start a throwaway database server from the local binaries: install them "
        "(Debian: apt install postgresql / mariadb-server), or name a scratch server in the "
        "plan's [drill] table (scratch_postgres = / scratch_mysql = )"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _traversable_by_others(path: Path) -> bool:
    """Whether another account can reach `path` (every folder on the way has o+x)."""
    for folder in [path, *path.parents]:
        try:
            if not folder.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; servers add a file name


def short_socket_dir(root: ScratchRoot, wanted: Path, owner: str | None = None) -> Path:
    """`wanted` when a socket path in it fits a unix socket address, else a private short
    folder in the system temp dir (removed on close)."""
    if len(str(wanted / "mysqld.sock")) <= _SOCKET_PATH_MAX:
        return wanted
    short = Path(tempfile.mkdtemp(prefix="safehold-drill-s-", dir="/tmp"))
    if owner:
        shutil.chown(short, owner, owner)
    root.on_close(lambda: shutil.rmtree(short, ignore_errors=True))
    return short


class ScratchRoot:
    """The drill's private folder. Subfolders for sources are 0700; database servers get
    their own subfolder (owned by `postgres` when running as root)."""

    def __init__(self, parent: str | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="safehold-drill-", dir=parent))
        # traversable (x) but not listable for others: the postgres user must reach its folder
        self.path.chmod(0o711)
        self._undo: list[Callable[[], None]] = []

    def folder(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(mode=0o700)
        return path

    def on_close(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def close(self) -> list[str]:
        """Undo everything (servers first, newest first), then remove the folder. Returns
        problems met on the way (teardown never raises: it runs after failures too)."""
        problems: list[str] = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as err:
                problems.append(str(err))
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path.exists():
            problems.append(f"could not remove {self.path}")
        return problems


class ScratchDatabases(Protocol):
    """Where a database source of the drill restores to."""

    kind: str  # "postgres" | "mysql"

    def target_url(self, source_db: str) -> str:
        """A URL naming the scratch database that `source_db` is restored into."""
        ...

    def database_url(self, source_db: str) -> str:
        """A URL for clients (smoke commands, checks) to reach that restored database."""
        ...

    def describe(self) -> str: ...


def _url(scheme: str, user: str, password: str, host: str, port: int, db: str) -> str:
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"{scheme}://{auth}@{host}:{port}/{quote(db, safe='')}"


# ----- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The newest local PostgreSQL server installation (Debian keeps it off PATH)."""
    from safehold.sources.postgres import find_bin_dir

    found = find_bin_dir(None, tool="initdb")
    if found is not None:
        return Path(found)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class ThrowawayPostgres:
    kind = "postgres"

    def __init__(self, root: ScratchRoot) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ScratchError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        self.bin_dir = bin_dir
        self.root = root
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        register_secret(self.password)
        self._owner = self._server_user()
        self.folder = self._server_folder(root)
        self.data = self.folder / "data"
        self.socket_dir = short_socket_dir(root, self.folder / "sock", self._owner)

    def _server_folder(self, root: ScratchRoot) -> Path:
        """Under the scratch root when the `postgres` account can reach it; else in a private
        folder of the system temp dir (removed on close like the rest)."""
        if self._owner is None or _traversable_by_others(root.path):
            return _unused(root.path / "postgres")  # a second server in one root: postgres-2
        outside = Path(tempfile.mkdtemp(prefix="safehold-drill-pg-"))
        outside.chmod(0o711)
        root.on_close(lambda: shutil.rmtree(outside, ignore_errors=True))
        return outside / "postgres"

    @staticmethod
    def _server_user() -> str | None:
        """PostgreSQL refuses to run as root: use the `postgres` account then."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ScratchError(
                "running as root, and there is no `postgres` account to run a scratch server",
                hint="install the postgresql package (it creates the account) or run as a user",
            ) from None
        return "postgres"

    def _run(
        self, argv: list[str], timeout: float = START_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        if self._owner:
            argv = ["runuser", "-u", self._owner, "--", *argv]
        return subprocess.run(
            argv, cwd="/", capture_output=True, text=True, check=False, timeout=timeout,
            start_new_session=True,
        )  # fmt: skip

    def _make_folders(self) -> None:
        self.folder.mkdir(mode=0o700)
        for folder in (self.folder, self.socket_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self._owner:
                shutil.chown(folder, self._owner, self._owner)

    def start(self) -> None:
        self._make_folders()
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password)
        if self._owner:
            shutil.chown(pwfile, self._owner, self._owner)
        initdb = self._run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", DRILL_USER,
             f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--locale=C.UTF-8"]
        )  # fmt: skip
        pwfile.unlink()
        if initdb.returncode != 0:
            raise ScratchError(f"initdb of the scratch PostgreSQL failed: {initdb.stderr.strip()}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\n# safehold drill scratch server\nlisten_addresses = '127.0.0.1'\n"
                f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\n"
                # a scratch server only loads a dump once: no WAL to keep, big index builds
                "wal_level = minimal\nmax_wal_senders = 0\nmax_wal_size = 4GB\n"
                "checkpoint_timeout = 30min\nautovacuum = off\n"
                "shared_buffers = 256MB\nmaintenance_work_mem = 256MB\n"
            )
        self._launch(START_TIMEOUT_S)

    def start_recovered(self, fill: Callable[[Path], None], timeout: float = 3600.0) -> None:
        """Start from a data folder that `fill(data)` writes (a restored base backup with its
        recovery settings) instead of a new cluster: only the unix socket in this private
        folder is open (trust), no TCP; the server recovers, then accepts connections.
        Connect with `socket_conninfo`, as a role the restored cluster has."""
        self._make_folders()
        self.data.mkdir(mode=0o700)
        fill(self.data)
        (self.data / "pg_hba.conf").write_text("local all all trust\n")
        (self.data / "postgresql.conf").touch()  # Debian keeps it in /etc: not in the backup
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "\n# safehold scratch server (recovery): socket only, no archiving\n"
                f"listen_addresses = ''\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"hba_file = '{self.data / 'pg_hba.conf'}'\n"
                "archive_mode = off\nfsync = off\n"
                "synchronous_commit = off\nmax_connections = 50\nhot_standby = off\n"
                "ssl = off\nshared_preload_libraries = ''\n"
            )
        if self._owner:
            account = pwd.getpwnam(self._owner)
            for path in [self.data, *self.data.rglob("*")]:
                os.lchown(path, account.pw_uid, account.pw_gid)
        self.data.chmod(0o700)
        deadline = time.monotonic() + timeout
        self._launch(timeout)
        self._wait_recovered(deadline)

    def _wait_recovered(self, deadline: float) -> None:
        """Wait until recovery ended and the server promoted (pg_ctl -w returns as soon as
        recovery begins when hot_standby is off): recovery.signal is gone and postmaster.pid
        says `ready`. A server that stops meanwhile (target not reached) is an error."""
        pidfile = self.data / "postmaster.pid"
        while time.monotonic() < deadline:
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                raise ScratchError(
                    f"the scratch PostgreSQL stopped during recovery: {self._log_tail()}"
                ) from None
            status = lines[7].strip() if len(lines) > 7 else ""
            if status == "ready" and not (self.data / "recovery.signal").exists():
                return
            time.sleep(0.2)
        raise ScratchError("the scratch PostgreSQL did not finish its recovery in time")

    def _log_tail(self) -> str:
        lines = self.log_text().strip().splitlines()
        fatal = [line for line in lines if "FATAL" in line or "PANIC" in line]
        return (fatal or lines or ["(no server log)"])[-1]

    def socket_conninfo(self, user: str, dbname: str) -> str:
        return make_conninfo(
            "", host=str(self.socket_dir), port=str(self.port), user=user, dbname=dbname
        )

    def _launch(self, timeout: float) -> None:
        self.root.on_close(self.stop)
        log = self.folder / "server.log"
        started = self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(log),
             "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 30,
        )  # fmt: skip
        if started.returncode != 0:
            tail = self._log_tail() if log.exists() else started.stderr
            raise ScratchError(f"the scratch PostgreSQL did not start: {tail}")

    def log_text(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        stop = self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
             "-w", "-t", "30", "stop"]
        )  # fmt: skip
        if stop.returncode != 0:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
                os.kill(pid, signal.SIGQUIT)
                if not _wait_gone(pid, 10):
                    os.kill(pid, signal.SIGKILL)

    def target_url(self, source_db: str) -> str:
        return _url("postgresql", DRILL_USER, self.password, "127.0.0.1", self.port, source_db)

    database_url = target_url

    def describe(self) -> str:
        return f"throwaway PostgreSQL ({self.bin_dir.parent.name}) on 127.0.0.1:{self.port}"


# ----- MariaDB / MySQL -----------------------------------------------------------------------


class ThrowawayMariadb:
    kind = "mysql"

    def __init__(self, root: ScratchRoot) -> None:
        server = shutil.which("mariadbd") or shutil.which("mysqld")
        if server is None and os.path.exists("/usr/sbin/mariadbd"):
            server = "/usr/sbin/mariadbd"
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        client = shutil.which("mariadb") or shutil.which("mysql")
        if server is None or install is None or client is None:
            raise ScratchError("no MariaDB/MySQL server binaries (mariadbd, mariadb-install-db)")
        self.server, self.install, self.client = server, install, client
        self.root = root
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        register_secret(self.password)
        self.folder = root.path / "mariadb"
        self.socket = short_socket_dir(root, self.folder) / "mysqld.sock"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(mode=0o700)
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        data = self.folder / "data"
        installed = subprocess.run(
            [self.install, "--no-defaults", *as_root, f"--datadir={data}",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            cwd="/", capture_output=True, text=True, check=False, timeout=120,
            start_new_session=True,
        )  # fmt: skip
        if installed.returncode != 0:
            raise ScratchError(
                f"mariadb-install-db for the scratch server failed: {installed.stderr.strip()}"
            )
        self.root.on_close(self.stop)
        with open(self.folder / "server.out", "wb") as log:
            self._process = subprocess.Popen(
                [self.server, "--no-defaults", *as_root, f"--datadir={data}",
                 f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
                 f"--pid-file={self.folder / 'mariadbd.pid'}",
                 f"--log-error={self.folder / 'error.log'}", "--skip-name-resolve",
                 "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=0",
                 "--skip-log-bin", "--max-connections=50"],
                cwd="/", stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._sql("SELECT 1") is not None:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise ScratchError(f"the scratch MariaDB did not start: {self._error_tail()}")
            time.sleep(0.1)
        literal = self.password.replace("\\", "\\\\").replace("'", "\\'")
        problem = self._sql(
            f"CREATE USER '{DRILL_USER}'@'127.0.0.1' IDENTIFIED BY '{literal}';"
            f"GRANT ALL ON *.* TO '{DRILL_USER}'@'127.0.0.1' WITH GRANT OPTION;"
        )
        if problem is not None:
            raise ScratchError(f"could not create the drill user on the scratch MariaDB: {problem}")

    def _sql(self, query: str) -> str | None:
        """Run SQL as root over the socket; None on success, else the error text."""
        result = subprocess.run(
            [self.client, "--no-defaults", "-uroot", f"--socket={self.socket}", "-e", query],
            cwd="/", capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        return None if result.returncode == 0 else (result.stderr.strip() or "failed")

    def _error_tail(self) -> str:
        try:
            lines = (self.folder / "error.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no error log"
        errors = [line for line in lines if "ERROR" in line]
        return (errors or lines or ["empty error log"])[-1]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def target_url(self, source_db: str) -> str:
        return _url("mysql", DRILL_USER, self.password, "127.0.0.1", self.port, source_db)

    database_url = target_url

    def describe(self) -> str:
        return f"throwaway MariaDB on 127.0.0.1:{self.port}"


# ----- a scratch server named by the plan ------------------------------------------------------


class NamedScratchServer:
    """`safehold_drill_<token>_<db>` databases on a server the plan names; dropped on close."""

    def __init__(self, kind: str, url: str, root: ScratchRoot) -> None:
        self.kind = kind
        self.url = url
        self.root = root
        self.token = secrets.token_hex(3)
        self.created: list[str] = []
        parts = urlsplit(url)
        self._base = parts

    def scratch_name(self, source_db: str) -> str:
        safe = "".join(c if c.isalnum() or c == "_" else "_" for c in source_db.lower())
        return f"{DRILL_DB_PREFIX}{self.token}_{safe}"[:63]

    def _with_db(self, db: str) -> str:
        return urlunsplit(self._base._replace(path="/" + quote(db, safe=""), query=""))

    def target_url(self, source_db: str) -> str:
        name = self.scratch_name(source_db)
        if name not in self.created:
            self.created.append(name)
            if len(self.created) == 1:
                self.root.on_close(self.drop_all)
        return self._with_db(name)

    def database_url(self, source_db: str) -> str:
        return self._with_db(self.scratch_name(source_db))

    def drop_all(self) -> None:
        problems = []
        for name in self.created:
            try:
                drop_database(self.kind, self.url, name)
            except Exception as err:
                problems.append(f"{name}: {err}")
        self.created.clear()
        if problems:
            raise ScratchError("could not drop drill database(s) " + "; ".join(problems))

    def describe(self) -> str:
        return f"scratch server {redact_url(self.url)} (databases {DRILL_DB_PREFIX}{self.token}_*)"


def drop_database(kind: str, server_url: str, name: str) -> None:
    """Drop one drill database; refuses any name without the drill prefix."""
    if not name.startswith(DRILL_DB_PREFIX):
        raise ScratchError(f"refusing to drop {name}: not a drill database")
    if kind == "postgres":
        import psycopg
        from psycopg import sql

        from safehold.sources.postgres import PgLocation

        location = PgLocation.parse(server_url)
        with psycopg.connect(
            location.conninfo("postgres"), password=location.password, autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        return
    from safehold.sources.mysql import MyLocation, connect, quote_identifier

    conn = connect(MyLocation.parse(server_url), None)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)}")
    finally:
        conn.close()
