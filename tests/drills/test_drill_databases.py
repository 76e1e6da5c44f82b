"""Drills of apps with real PostgreSQL and MariaDB databases: into a throwaway server started
from the local binaries, into `safehold_drill_*` databases on a named scratch server, and a
drill that must fail because the dump does not hold the rows the backup recorded."""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from safehold.backends.local import LocalBackend
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli

CHECKS = """
[[drill.checks]]
type = "sql"
source = "db"
query = "SELECT count(*) FROM users"
min = 50
[[drill.checks]]
type = "uploads"
source = "db"
query = "SELECT avatar FROM users WHERE avatar IS NOT NULL"
files = "uploads"
[[drill.checks]]
type = "command"
name = "the app can read its database"
command = "test -n \\"$DATABASE_URL$SAFEHOLD_DB_URL\\" && test -d \\"$UPLOADS_DIR\\""
"""


def _app(tmp_path: Path, kind: str, extra: str = "") -> Path:
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    for number in range(1, 4):
        (app / "uploads" / f"a{number}.png").write_bytes(bytes([number]) * 5000)
    (app / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "10m"
[[sources]]
name = "db"
type = "{kind}"
url = "${{APP_DB_URL}}"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "local"
repository = "backups"
{extra}
{CHECKS}
"""
    )
    return app


def _cli(
    run_cli: RunCli, app: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli("--plan", str(app / "safehold.toml"), *args, env=env)


def _ok(result: subprocess.CompletedProcess[str], *secrets_: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    for secret in secrets_:
        assert secret not in output
    return output


def _fill_postgres(server: Any, db: str) -> None:
    server.create_database(db)
    server.psql(
        "CREATE TABLE users (id serial PRIMARY KEY, email text, avatar text, "
        "created_at timestamptz NOT NULL DEFAULT now());"
        "INSERT INTO users (email, avatar) SELECT 'u' || g || '@shop.test', "
        "CASE WHEN g <= 3 THEN 'a' || g || '.png' END FROM generate_series(1, 60) g;"
        "CREATE TABLE orders (id serial PRIMARY KEY, total numeric);"
        "INSERT INTO orders (total) SELECT g FROM generate_series(1, 500) g",
        db=db,
    )


def _no_drill_processes(scratch: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert "safehold-drill-" not in ps.stdout
    assert list(scratch.iterdir()) == []
    assert not list(Path(tempfile.gettempdir()).glob("safehold-drill-*"))


def test_postgres_drill_in_a_throwaway_server(
    tmp_path: Path, run_cli: RunCli, postgres_server: Any
) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    _fill_postgres(postgres_server, db)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    app = _app(tmp_path, "postgres")
    env = {"APP_DB_URL": postgres_server.url(db), "SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    try:
        _ok(_cli(run_cli, app, env, "init"))
        _ok(_cli(run_cli, app, env, "backup"), postgres_server.password)
        output = _ok(_cli(run_cli, app, env, "drill"), postgres_server.password)
        assert "throwaway PostgreSQL" in output
        assert "drill PASSED" in output
        assert "public.orders: 500 rows (matches backup)" in output
        assert "all 3 uploads present" in output
        assert "newest row db/" in output and "users.created_at" in output
        _no_drill_processes(scratch)
    finally:
        postgres_server.drop_database(db)


def test_postgres_drill_on_a_named_scratch_server(
    tmp_path: Path, run_cli: RunCli, postgres_server: Any
) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    _fill_postgres(postgres_server, db)
    app = _app(tmp_path, "postgres", '[drill]\nscratch_postgres = "${SCRATCH_URL}"\n')
    env = {"APP_DB_URL": postgres_server.url(db), "SCRATCH_URL": postgres_server.url("postgres")}
    try:
        _ok(_cli(run_cli, app, env, "init"))
        _ok(_cli(run_cli, app, env, "backup"))
        result = _cli(run_cli, app, env, "drill", "--json")
        _ok(result, postgres_server.password)
        record = json.loads(result.stdout)
        assert record["passed"] is True, record["reasons"]
        assert "safehold_drill_" in record["sources"][0]["target"]
        left = postgres_server.psql(
            "SELECT datname FROM pg_database WHERE datname LIKE 'safehold_drill_%'"
        )
        assert left.strip() == ""
        assert int(postgres_server.psql("SELECT count(*) FROM users", db=db)) == 60
    finally:
        postgres_server.drop_database(db)


def test_postgres_drill_fails_when_the_dump_lacks_rows(
    tmp_path: Path, run_cli: RunCli, postgres_server: Any
) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    _fill_postgres(postgres_server, db)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    app = _app(tmp_path, "postgres")
    env = {"APP_DB_URL": postgres_server.url(db), "SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    try:
        _ok(_cli(run_cli, app, env, "init"))
        _ok(_cli(run_cli, app, env, "backup"))
        # A dump that silently lost rows: the snapshot records 505 orders, the dump holds 500.
        repo = Repository.open(LocalBackend(app / "backups"), TEST_PASSWORD.encode())
        original = repo.list_snapshots()[-1]
        manifest = json.loads(json.dumps(original.safehold))
        manifest["sources"]["db"]["databases"][db]["tables"]["public.orders"] = 505
        broken_id = repo.save_snapshot(dataclasses.replace(original, safehold=manifest, id=""))
        result = _cli(run_cli, app, env, "drill", broken_id[:8])
        assert result.returncode == 1, result.stdout + result.stderr
        assert "drill FAILED" in result.stdout
        assert "public.orders: 500 rows (backup had 505)" in result.stdout
        assert "restore of db does not match the backup" in result.stdout
        _no_drill_processes(scratch)  # the failed drill tore its server down too
    finally:
        postgres_server.drop_database(db)


def test_mariadb_drill_in_a_throwaway_server(
    tmp_path: Path, run_cli: RunCli, mariadb_server: Any
) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    server = mariadb_server
    server.sql(f"CREATE DATABASE {db}")
    server.sql(
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, email TEXT, avatar TEXT, "
        "created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);"
        "INSERT INTO users (email, avatar) SELECT CONCAT('u', seq, '@shop.test'), "
        "IF(seq <= 3, CONCAT('a', seq, '.png'), NULL) FROM seq_1_to_60",
        db=db,
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    app = _app(tmp_path, "mysql")
    env = {"APP_DB_URL": server.url(db), "SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    try:
        _ok(_cli(run_cli, app, env, "init"))
        _ok(_cli(run_cli, app, env, "backup"), server.password)
        output = _ok(_cli(run_cli, app, env, "drill"), server.password)
        assert "throwaway MariaDB" in output
        assert "drill PASSED" in output
        assert "users: 60 rows (matches backup)" in output
        assert "all 3 uploads present" in output
        _no_drill_processes(scratch)
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {db}")


def test_mariadb_drill_on_a_named_scratch_server(
    tmp_path: Path, run_cli: RunCli, mariadb_server: Any
) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    server = mariadb_server
    server.sql(f"CREATE DATABASE {db}")
    server.sql(
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, email TEXT, avatar TEXT);"
        "INSERT INTO users (email, avatar) SELECT CONCAT('u', seq, '@shop.test'), "
        "IF(seq <= 3, CONCAT('a', seq, '.png'), NULL) FROM seq_1_to_60",
        db=db,
    )
    app = _app(tmp_path, "mysql", '[drill]\nscratch_mysql = "${SCRATCH_URL}"\n')
    env = {"APP_DB_URL": server.url(db), "SCRATCH_URL": server.url("")}
    try:
        _ok(_cli(run_cli, app, env, "init"))
        _ok(_cli(run_cli, app, env, "backup"))
        result = _cli(run_cli, app, env, "drill", "--json")
        _ok(result, server.password)
        record = json.loads(result.stdout)
        assert record["passed"] is True, record["reasons"]
        assert "safehold_drill_" in record["sources"][0]["target"]
        freshness = [c for c in record["checks"] if c["kind"] == "freshness"]
        assert freshness[0]["warning"] is True  # no dated column: data age not measured
        query = "SHOW DATABASES LIKE 'safehold\\_drill\\_%'"
        assert server.sql(query).strip() == ""
        server.sql("CREATE DATABASE safehold_drill_probe")  # the query does see such names
        assert server.sql(query).strip() == "safehold_drill_probe"
        server.sql("DROP DATABASE safehold_drill_probe")
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {db}")


pytestmark = pytest.mark.slow
