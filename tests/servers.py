"""Real database servers on loopback for tests: PostgreSQL 15 (Debian) and MariaDB.

Session-scoped pytest fixtures, reusable from any test folder: import them in that folder's
conftest.py (`from tests.servers import postgres_server, mariadb_server`).

Each server lives in a private temp dir, listens on 127.0.0.1 on a random free port and on its
own unix socket, and is stopped (by its pid) and deleted when the session ends, also when the
start failed halfway. Connections made through `.url()` use TCP and a password (scram-sha-256
for PostgreSQL), so the password path of the code under test is really exercised; the helpers
`.psql()` / `.sql()` use the unix socket as the superuser without a password.

A server is skipped only when its binaries are missing; scripts/test-all.sh installs them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

# deliberately awkward: URL-reserved characters, quotes and a backslash
PG_PASSWORD = "pg:p@ss/w%rd?#&'\"\\ é"
MARIADB_PASSWORD = "my:p@ss/w%rd?#&'\"\\ é"
PG_USER = "backup_user"
MARIADB_USER = "backup_user"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_bin_dir() -> Path | None:
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if version.isdigit() and os.path.exists(os.path.join(path, "initdb")):
            found.append((int(version), Path(path)))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made with openssl."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = folder / "ca.pem", folder / "ca.key"
        self.cert, self.key = folder / "server.pem", folder / "server.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        self._openssl("req", "-x509", *ec, "-keyout", self.ca_key, "-out", self.ca,
                      "-subj", "/CN=safehold test CA")  # fmt: skip
        self._openssl("req", "-x509", *ec, "-keyout", self.key, "-out", self.cert,
                      "-subj", "/CN=127.0.0.1", "-CA", self.ca, "-CAkey", self.ca_key,
                      "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                      "-addext", "basicConstraints=critical,CA:FALSE")  # fmt: skip
        for path in (self.ca, self.cert, self.key):
            path.chmod(0o644 if path.suffix == ".pem" else 0o600)

    @staticmethod
    def _openssl(*args: str | Path) -> None:
        result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                                check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {result.stderr}")

    def give_to(self, user: str) -> None:
        """The server reads its key as `user` (postgres refuses a key others can read)."""
        for path in (self.cert, self.key, self.ca):
            shutil.chown(path, user, user)


class PostgresServer:
    """A throwaway PostgreSQL cluster; `url()` connects over TCP with a password. With `tls`
    the server has ssl=on and accepts TCP connections over TLS only (hostssl)."""

    user = PG_USER
    password = PG_PASSWORD
    host = "127.0.0.1"

    def __init__(self, root: Path, bin_dir: Path, port: int, tls: TlsFiles | None = None,
                 extra_conf: str = "", initdb_args: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.root = root
        self.tls = tls
        self.extra_conf = extra_conf  # appended to postgresql.conf (WAL archiving tests)
        self.initdb_args = initdb_args
        self.bin_dir = bin_dir
        self.port = port
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "log" / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._started = False

    def _run_as_owner(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # cwd=/: runuser'd tools warn when they cannot enter root's working directory
        return subprocess.run(argv, cwd="/", capture_output=True, text=True, check=False)

    def start(self) -> None:
        for folder in (self.data, self.socket_dir, self.log.parent):
            folder.mkdir()
            if self._as_postgres:
                shutil.chown(folder, "postgres", "postgres")
        initdb = self._run_as_owner(
            [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C.UTF-8", *self.initdb_args]
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\n"
            )
            conf.write(self.extra_conf)
            if self.tls is not None:
                if self._as_postgres:
                    self.tls.give_to("postgres")
                conf.write(
                    f"ssl = on\nssl_cert_file = '{self.tls.cert}'\n"
                    f"ssl_key_file = '{self.tls.key}'\n"
                )
        if self.tls is not None:  # TCP only over TLS: a plaintext connection is refused
            hba = self.data / "pg_hba.conf"
            lines = hba.read_text().splitlines()
            hba.write_text("\n".join(
                "hostssl" + line[4:] if line.startswith("host ") else line for line in lines
            ) + "\n")  # fmt: skip
        self._started = True
        start = self._run_as_owner(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l",
             str(self.log), "-w", "-t", "60", "start"]
        )  # fmt: skip
        if start.returncode != 0:
            try:
                log = self.log.read_text(errors="replace")[-4000:]
            except OSError:
                log = "(no server log)"
            raise RuntimeError(f"pg_ctl start failed: {start.stderr}\n{log}")
        literal = self.password.replace("'", "''")
        self.psql(f"CREATE ROLE {self.user} LOGIN SUPERUSER")
        self.psql(f"ALTER ROLE {self.user} PASSWORD '{literal}'")

    def url(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:  # fmt: skip
        user = user or self.user
        password = self.password if password is None else password
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket; returns unaligned, tuples-only output."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", db,
             "-c", sql],
            cwd="/", capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout

    def connect(self, db: str = "postgres", autocommit: bool = True) -> Any:
        """A psycopg connection over TCP with the password."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=db, autocommit=autocommit,
        )  # fmt: skip

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._started:
            self._started = False
            stop = self._run_as_owner(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                 "-w", "-t", "30", "stop"]
            )  # fmt: skip
            if stop.returncode != 0:
                self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)
            if not _wait_gone(pid, 10):
                os.kill(pid, signal.SIGKILL)


class MariadbServer:
    """A throwaway MariaDB server; `url()` connects over TCP with a password. With `tls` it
    has a certificate and requires TLS on TCP (require_secure_transport)."""

    user = MARIADB_USER
    password = MARIADB_PASSWORD
    host = "127.0.0.1"

    def __init__(self, root: Path, port: int, tls: TlsFiles | None = None) -> None:
        self.root = root
        self.tls = tls
        self.port = port
        self.data = root / "data"
        self.socket = root / "mysqld.sock"
        self.client = shutil.which("mariadb") or shutil.which("mysql") or "mariadb"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data.mkdir()
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        assert install_db is not None
        install = subprocess.run(
            [install_db, "--no-defaults", *as_root, f"--datadir={self.data}",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            cwd="/", capture_output=True, text=True, check=False,
        )  # fmt: skip
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {install.stdout}{install.stderr}")
        server = shutil.which("mariadbd") or shutil.which("mysqld")
        assert server is not None
        tls = (
            [f"--ssl-cert={self.tls.cert}", f"--ssl-key={self.tls.key}",
             f"--ssl-ca={self.tls.ca}", "--require-secure-transport=ON"]
            if self.tls is not None else []
        )  # fmt: skip
        log = open(self.root / "server.out", "wb")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            [server, "--no-defaults", *as_root, f"--datadir={self.data}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.root / 'mariadbd.pid'}", f"--log-error={self.root / 'error.log'}",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
             "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0",
             "--skip-log-bin", "--max-connections=50", *tls],
            cwd="/", stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {self._error_log()}")
            ping = subprocess.run(
                [self.client, "--no-defaults", "-uroot", f"--socket={self.socket}",
                 "-e", "SELECT 1"],
                capture_output=True, check=False,
            )  # fmt: skip
            if ping.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not start: {self._error_log()}")
            time.sleep(0.1)
        literal = self.password.replace("\\", "\\\\").replace("'", "\\'")
        self.sql(
            f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{literal}';"
            f"GRANT ALL ON *.* TO '{self.user}'@'127.0.0.1' WITH GRANT OPTION;"
        )

    def _error_log(self) -> str:
        try:
            return (self.root / "error.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no error log)"

    def url(self, dbname: str = "", user: str | None = None,
            password: str | None = None) -> str:  # fmt: skip
        user = user or self.user
        password = self.password if password is None else password
        return (
            f"mysql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def sql(self, query: str, db: str | None = None) -> str:
        """Run SQL as root over the unix socket; returns tab-separated rows without headers."""
        result = subprocess.run(
            [self.client, "--no-defaults", "-uroot", f"--socket={self.socket}", "-N", "-B",
             "--default-character-set=utf8mb4", *([db] if db else []), "-e", query],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"mariadb client failed: {result.stderr}")
        return result.stdout

    def connect(self, db: str | None = None, autocommit: bool = True) -> Any:
        """A pymysql connection over TCP with the password."""
        import pymysql

        return pymysql.connect(
            host=self.host, port=self.port, user=self.user,
            password=self.password.encode("utf-8"),  # a str would be sent as latin-1
            database=db, autocommit=autocommit, charset="utf8mb4",
        )  # fmt: skip

    def create_database(self, name: str) -> None:
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # SIGTERM: mariadbd shuts down cleanly
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _private_dir(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # mkdtemp gives 0700: the postgres user could not traverse it
    return root


def _postgres(tls: bool) -> Iterator[PostgresServer]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb) not found: apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "postgres"], check=True)
    root = _private_dir("safehold-pg-")
    server = PostgresServer(root, bin_dir, free_port(), TlsFiles(root / "tls") if tls else None)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _postgres(tls=False)


@pytest.fixture(scope="session")
def postgres_tls_server() -> Iterator[PostgresServer]:
    """A second PostgreSQL server that speaks TCP only over TLS (`.tls` has its CA)."""
    yield from _postgres(tls=True)


def _mariadb(tls: bool) -> Iterator[MariadbServer]:
    missing = [
        tool
        for tool, alternatives in {
            "mariadbd": ("mariadbd", "mysqld"),
            "mariadb-install-db": ("mariadb-install-db", "mysql_install_db"),
            "mariadb client": ("mariadb", "mysql"),
            "mariadb-dump": ("mariadb-dump", "mysqldump"),
        }.items()
        if not any(shutil.which(a) for a in alternatives)
    ]
    if missing:
        pytest.skip(
            f"MariaDB binaries not found ({', '.join(missing)}): "
            "apt-get install mariadb-server mariadb-client"
        )
    root = _private_dir("safehold-mariadb-")
    server = MariadbServer(root, free_port(), TlsFiles(root / "tls") if tls else None)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariadbServer]:
    yield from _mariadb(tls=False)


@pytest.fixture(scope="session")
def mariadb_tls_server() -> Iterator[MariadbServer]:
    """A second MariaDB server that requires TLS on TCP (`.tls` has its CA)."""
    yield from _mariadb(tls=True)
