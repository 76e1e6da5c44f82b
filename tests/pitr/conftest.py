"""Fixtures for point-in-time recovery: a PostgreSQL 15 server (tests/servers.py) whose
archive_command is the real `safehold wal-push`, a plan and a repository it archives into.

The archive_command runs as the server's account (`postgres` when the tests run as root),
so everything it touches (plan, .env, repository, spool) is given to that account, and the
interpreter is one that account may run (the test venv's site-packages on PYTHONPATH).
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import safehold
from safehold.backends.local import LocalBackend
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD
from tests.servers import PostgresServer, _pg_bin_dir, _private_dir, free_port

AS_ROOT = os.geteuid() == 0


@functools.cache
def server_python() -> tuple[str, str]:
    """(interpreter, PYTHONPATH) that the postgres account can run safehold with."""
    src = str(Path(safehold.__file__).resolve().parent.parent)
    path = ":".join([src, *site.getsitepackages()])
    if not AS_ROOT:
        return sys.executable, path
    candidates = [
        sys.executable,
        f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}",
    ]
    for candidate in candidates:
        probe = subprocess.run(
            ["runuser", "-u", "postgres", "--", "env", f"PYTHONPATH={path}", candidate, "-c",
             "import safehold.cli.main"], cwd="/", capture_output=True, check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            return candidate, path
    pytest.fail("no Python interpreter the postgres account can run safehold with")


def open_repo(site: PitrSite) -> Repository:
    return Repository.open(LocalBackend(site.repo), TEST_PASSWORD.encode())


def give_to_postgres(path: Path) -> None:
    if AS_ROOT:
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, "postgres", "postgres")


@dataclass
class PitrSite:
    """An app folder with a plan (source `db` = database `shop` of `server`), its `.env`,
    the repository `backups/` and a spool, plus the archiving server."""

    root: Path
    app: Path
    server: PostgresServer
    env: dict[str, str]

    @property
    def plan(self) -> Path:
        return self.app / "safehold.toml"

    @property
    def repo(self) -> Path:
        return self.app / "backups"

    @property
    def spool(self) -> Path:
        return self.app / "spool"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`safehold --plan … ARGS` as the account PostgreSQL runs as, as a deployment runs
        it: the archive_command and the base backups share one repository and its locks."""
        python, pythonpath = server_python()
        argv = ["env", f"PYTHONPATH={pythonpath}", python, "-m", "safehold", "--plan",
                str(self.plan), *args]  # fmt: skip
        if AS_ROOT:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, env=self.env, cwd="/", capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip

    def ok(self, *args: str, timeout: float = 300) -> str:
        result = self.cli(*args, timeout=timeout)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output and TEST_PASSWORD not in output
        assert self.server.password not in output
        return output

    def sql(self, query: str, db: str = "shop") -> str:
        return self.server.psql(query, db).strip()

    def switch_and_wait(self, timeout: float = 60) -> str:
        """Close the current segment and wait until the server says it is archived."""
        segment = self.sql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")
        self.wait_archived(segment, timeout)
        return segment

    def wait_archived(self, segment: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                            "postgres")  # fmt: skip
            if last and last[:24] >= segment:
                return
            time.sleep(0.1)
        raise AssertionError(f"{segment} was not archived: {self.server.log.read_text()[-3000:]}")


def make_site(tmp_root: Path, env: dict[str, str], mode: str, archive_timeout: int = 0) -> PitrSite:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries (initdb) not found: apt-get install postgresql")
    app = tmp_root / "app"
    app.mkdir()
    (app / "spool").mkdir()
    python, pythonpath = server_python()
    plan = app / "safehold.toml"
    push = (
        ["wal-push", "--async", "--spool", str(app / "spool")] if mode == "async" else ["wal-push"]
    )
    command = shlex.join(["env", f"PYTHONPATH={pythonpath}", python, "-m", "safehold",
                          "--plan", str(plan), "-q", *push]) + " %p"  # fmt: skip
    conf = (
        "wal_level = replica\narchive_mode = on\n"
        f"archive_command = '{command.replace(chr(39), chr(39) * 2)}'\n"
        f"archive_timeout = {archive_timeout}\nmax_wal_senders = 4\n"
    )
    stream_lines = ""
    if mode == "stream":  # WAL arrives through `safehold wal-stream`, not archive_command
        conf = f"wal_level = replica\narchive_timeout = {archive_timeout}\nmax_wal_senders = 4\n"
        stream_lines = f'wal = "stream"\nwal_spool = "{app / "spool"}"\n'

    server = PostgresServer(tmp_root / "pg", bin_dir, free_port(), extra_conf=conf,
                            initdb_args=("--wal-segsize=1",))  # fmt: skip
    (tmp_root / "pg").mkdir()
    plan.write_text(
        f"""app = "shop"
env = "prod"
[targets]
rpo = "1m"
rto = "15m"
[[sources]]
name = "db"
type = "postgres"
url = "${{SHOP_DB_URL}}"
pitr = "wal"
{stream_lines}[[destinations]]
name = "local"
repository = "backups"
"""
    )
    (app / ".env").write_text(
        f"SAFEHOLD_PASSWORD='{TEST_PASSWORD}'\nSHOP_DB_URL='{server.url('shop')}'\n"
    )
    (app / ".env").chmod(0o600)
    give_to_postgres(app)
    site_ = PitrSite(tmp_root, app, server, env)
    site_.ok("init")
    server.start()
    server.create_database("shop")
    return site_


@pytest.fixture
def pitr_site(cli_env: dict[str, str]) -> Iterator[PitrSite]:
    """An archiving server in sync mode (each segment stored before the command returns)."""
    root = _private_dir("safehold-pitr-")
    try:
        site_ = make_site(root, cli_env, "sync")
        yield site_
    finally:
        _teardown(root)


@pytest.fixture
def stream_site(cli_env: dict[str, str]) -> Iterator[PitrSite]:
    """A server whose WAL only `safehold wal-stream` takes (no archive_command)."""
    root = _private_dir("safehold-pitr-")
    try:
        site_ = make_site(root, cli_env, "stream")
        yield site_
    finally:
        _teardown(root)


@pytest.fixture
def async_site(cli_env: dict[str, str]) -> Iterator[PitrSite]:
    """An archiving server in async mode (spool + pusher)."""
    root = _private_dir("safehold-pitr-")
    try:
        site_ = make_site(root, cli_env, "async")
        yield site_
    finally:
        _teardown(root)


def _teardown(root: Path) -> None:
    data = root / "pg" / "data"
    if (data / "postmaster.pid").exists():
        bin_dir = _pg_bin_dir()
        argv = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        if AS_ROOT:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, cwd="/", capture_output=True, check=False)
    lock = root / "app" / "spool" / "pusher.lock"
    if lock.exists():
        stop_pusher(lock)
    shutil.rmtree(root, ignore_errors=True)


def stop_pusher(lock: Path) -> None:
    """Stop the pusher that wrote its pid into the spool's lock file (only that pid)."""
    try:
        pid = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return


@dataclass
class Cluster:
    """A data folder safehold restored, started with pg_ctl on a port of its own (TCP on
    127.0.0.1 and a private socket), as the account PostgreSQL runs as."""

    data: Path
    port: int
    socket_dir: Path
    log: Path

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if AS_ROOT else argv

    def start(self) -> None:
        bin_dir = _pg_bin_dir()
        assert bin_dir is not None
        self.socket_dir.mkdir(exist_ok=True)
        self.log.touch()
        give_to_postgres(self.socket_dir)
        give_to_postgres(self.log)
        argv = [str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", "120", "-o", f"-p {self.port} -k {self.socket_dir} "
                "-c listen_addresses=127.0.0.1", "start"]  # fmt: skip
        started = subprocess.run(self._as_owner(argv), cwd="/", capture_output=True, text=True,
                                 check=False)  # fmt: skip
        assert started.returncode == 0, started.stderr + self.log.read_text()[-3000:]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # it recovers, then promotes
            if self.psql("SELECT pg_is_in_recovery()", "postgres", check=False) == "f":
                return
            time.sleep(0.2)
        raise AssertionError(f"never promoted: {self.log.read_text()[-3000:]}")

    def psql(self, query: str, db: str = "shop", check: bool = True) -> str:
        bin_dir = _pg_bin_dir()
        assert bin_dir is not None
        argv = [str(bin_dir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h",
                str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", db,
                "-c", query]  # fmt: skip
        done = subprocess.run(argv, cwd="/", capture_output=True, text=True, check=False)
        if check:
            assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def stop(self) -> None:
        bin_dir = _pg_bin_dir()
        assert bin_dir is not None
        argv = [str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
        subprocess.run(self._as_owner(argv), cwd="/", capture_output=True, check=False)
