"""Restores onto a fresh server bring the accounts along: PostgreSQL roles (from globals.sql),
owners, grants, default privileges and RLS policies into a SECOND, empty PostgreSQL server;
MariaDB users and grants; --no-roles / --no-owner; the credentials hint; the drill's check."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from safehold.repo.repository import Repository
from safehold.sources.base import AccountOptions
from safehold.sources.dbtools import RestoreError
from safehold.sources.mysql import MysqlSource
from safehold.sources.postgres import PostgresSource
from tests.conftest import RunCli
from tests.servers import (
    MariadbServer,
    PostgresServer,
    _pg_bin_dir,
    _private_dir,
    free_port,
)
from tests.sources.conftest import backup

APP_PASSWORD = "app pass 'x'"


@pytest.fixture(scope="module")
def second_postgres(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """Another PostgreSQL cluster, started as tests/servers.py starts the first: the fresh
    server of a disaster (only its superusers, none of the app's roles)."""
    bin_dir = _pg_bin_dir()
    assert bin_dir is not None  # postgres_server would have skipped
    root = _private_dir("safehold-pg2-")
    server = PostgresServer(root, bin_dir, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def app_db(postgres_server: PostgresServer) -> Iterator[tuple[str, str, str]]:
    """A database owned by an app role, with a read-only role, grants, default privileges and
    an RLS policy; (database, owner role, reader role). Dropped afterwards."""
    token = secrets.token_hex(3)
    db, owner, reader = f"shop_{token}", f"app_owner_{token}", f"app_reader_{token}"
    literal = APP_PASSWORD.replace("'", "''")
    server = postgres_server
    server.psql(f"CREATE ROLE {reader} NOLOGIN; CREATE ROLE {owner} LOGIN PASSWORD '{literal}'")
    server.psql(f"GRANT {reader} TO {owner}")
    server.psql(f"CREATE DATABASE {db} OWNER {owner}")
    server.psql(
        f"SET ROLE {owner};"
        "CREATE SCHEMA app;"
        "CREATE TABLE app.items (id serial PRIMARY KEY, tenant text NOT NULL, name text);"
        "INSERT INTO app.items (tenant, name) VALUES ('a', 'one'), ('b', 'two');"
        f"GRANT USAGE ON SCHEMA app TO {reader};"
        f"GRANT SELECT ON app.items TO {reader};"
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {reader};"
        "ALTER TABLE app.items ENABLE ROW LEVEL SECURITY;"
        f"CREATE POLICY tenant_a ON app.items FOR SELECT TO {reader} USING (tenant = 'a');",
        db=db,
    )
    yield db, owner, reader
    server.drop_database(db)
    server.psql(f"DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {reader}")


def _schema(server: PostgresServer, db: str) -> str:
    result = subprocess.run(
        [str(server.bin_dir / "pg_dump"), "--schema-only", "-h", str(server.socket_dir),
         "-p", str(server.port), "-U", "postgres", db],
        cwd="/", capture_output=True, text=True, check=True,
    )  # fmt: skip
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


def _drop_roles(server: PostgresServer, *roles: str) -> None:
    for role in roles:
        server.psql(f"DROP ROLE IF EXISTS {role}")


def test_postgres_restore_into_an_empty_server_creates_roles_and_keeps_owners(
    repo: Repository,
    postgres_server: PostgresServer,
    second_postgres: PostgresServer,
    app_db: tuple[str, str, str],
) -> None:
    db, owner, reader = app_db
    source = PostgresSource("pg", postgres_server.url(db))
    snapshot, manifest = backup(repo, source)
    assert ["role", reader] in manifest["globals"]["roles"]
    # an existing role on the target is not altered: it keeps its own attributes
    second_postgres.psql(f"CREATE ROLE {reader} NOLOGIN CONNECTION LIMIT 7")
    try:
        report = source.restore(repo, snapshot, manifest, second_postgres.url(db))
        assert report.warnings == []
        assert report.details["roles"]["created"] == [owner]
        assert reader in report.details["roles"]["existing"]
        assert report.details["accounts"]["ok"] is True
        assert _schema(postgres_server, db) == _schema(second_postgres, db)
        assert (
            second_postgres.psql(
                f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{reader}'"
            ).strip()
            == "7"
        )
        assert (
            second_postgres.psql(f"SELECT pg_has_role('{owner}', '{reader}', 'MEMBER')").strip()
            == "t"
        )
        # the app's own role logs in with its old password and can still migrate its table
        with psycopg.connect(
            host="127.0.0.1", port=second_postgres.port, user=owner, password=APP_PASSWORD,
            dbname=db, autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute("ALTER TABLE app.items ADD COLUMN price numeric")
    finally:
        second_postgres.drop_database(db)
        _drop_roles(second_postgres, owner, reader)


def test_postgres_no_owner_and_no_roles(
    repo: Repository,
    postgres_server: PostgresServer,
    second_postgres: PostgresServer,
    app_db: tuple[str, str, str],
) -> None:
    db, owner, reader = app_db
    source = PostgresSource("pg", postgres_server.url(db))
    snapshot, manifest = backup(repo, source)
    try:
        # --no-roles: nobody is created; the grants to the missing roles fail, and say so
        no_roles = source.restore(repo, snapshot, manifest, second_postgres.url(f"{db}_a"),
                                  accounts=AccountOptions(roles=False))  # fmt: skip
        assert "roles" not in no_roles.details
        assert no_roles.details["accounts"]["ok"] is False
        assert any(f"role {owner}" in w for w in no_roles.warnings)
        assert second_postgres.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{owner}'") == ""
        # --no-owner: roles created, tables belong to the restoring user, grants equal
        report = source.restore(repo, snapshot, manifest, second_postgres.url(f"{db}_b"),
                                accounts=AccountOptions(owners=False))  # fmt: skip
        assert report.warnings == [], report.warnings
        owner_now = second_postgres.psql(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'", db=f"{db}_b"
        )
        assert owner_now.strip() == second_postgres.user
    finally:
        second_postgres.drop_database(f"{db}_a")
        second_postgres.drop_database(f"{db}_b")
        _drop_roles(second_postgres, owner, reader)


def test_postgres_without_globals_does_not_claim_missing_owners(
    repo: Repository,
    postgres_server: PostgresServer,
    second_postgres: PostgresServer,
    app_db: tuple[str, str, str],
) -> None:
    """globals = false: the backup holds no roles, so owners and grants of roles the new
    server lacks cannot come along; the restore says so instead of failing the roles check."""
    db, owner, reader = app_db
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
    snapshot, manifest = backup(repo, source)
    try:
        report = source.restore(repo, snapshot, manifest, second_postgres.url(db))
        assert "accounts" not in report.details or report.details["accounts"]["ok"]
        assert "globals = false" in report.details["accounts_not_compared"]
        assert second_postgres.psql("SELECT count(*) FROM app.items", db=db).strip() == "2"
    finally:
        second_postgres.drop_database(db)
        _drop_roles(second_postgres, owner, reader)


def test_postgres_restore_without_password_gets_a_credentials_hint(
    repo: Repository, postgres_server: PostgresServer, second_postgres: PostgresServer,
    app_db: tuple[str, str, str],
) -> None:  # fmt: skip
    db, _owner, _reader = app_db
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
    snapshot, manifest = backup(repo, source)
    no_password = f"postgresql://{second_postgres.user}@127.0.0.1:{second_postgres.port}/x"
    with pytest.raises(RestoreError) as caught:
        source.restore(repo, snapshot, manifest, no_password)
    assert "PGPASSWORD" in caught.value.hint and "empty" not in caught.value.hint
    with pytest.raises(RestoreError) as wrong:
        source.restore(repo, snapshot, manifest, second_postgres.url("x", password="wrong"))
    assert "password" in wrong.value.hint and "empty" not in wrong.value.hint


# ----- MariaDB ---------------------------------------------------------------------------------


def test_mariadb_users_and_grants_round_trip(
    repo: Repository, mariadb_server: MariadbServer
) -> None:
    """Into the same server after the users were dropped (a second MariaDB would be slow)."""
    token = secrets.token_hex(3)
    db, writer, reader = f"shop_{token}", f"app_rw_{token}", f"app_ro_{token}"
    server = mariadb_server
    server.create_database(db)
    server.sql("CREATE TABLE items (id INT PRIMARY KEY, name TEXT); INSERT INTO items "
               "VALUES (1, 'one')", db=db)  # fmt: skip
    server.sql(
        f"CREATE USER '{writer}'@'%' IDENTIFIED BY 'rw secret';"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{db}`.* TO '{writer}'@'%';"
        f"CREATE USER '{reader}'@'localhost' IDENTIFIED BY 'ro secret';"
        f"GRANT SELECT ON `{db}`.`items` TO '{reader}'@'localhost'"
    )
    restored = f"{db}_restored"
    try:
        source = MysqlSource("my", server.url(db))
        snapshot, manifest = backup(repo, source)
        recorded = manifest["accounts"]["grants"]
        assert f"'{writer}'@'%'" in recorded, manifest["accounts"]
        assert "ro secret" not in str(manifest)
        assert not any("root" in name or "mariadb.sys" in name for name in recorded)
        server.sql(f"DROP USER '{writer}'@'%'")
        # the reader exists already with another password: it must not be altered
        server.sql(f"ALTER USER '{reader}'@'localhost' IDENTIFIED BY 'new ro'")
        report = source.restore(repo, snapshot, manifest, server.url(restored))
        assert report.warnings == [], report.warnings
        assert report.details["accounts"] == {
            "checked": True, "ok": True, "created": [f"'{writer}'@'%'"], "missing": [],
        }  # fmt: skip
        grants = server.sql(f"SHOW GRANTS FOR '{writer}'@'%'")
        assert f"ON `{restored}`.*" in grants and "DELETE" in grants
        assert f"`{restored}`.`items`" in server.sql(f"SHOW GRANTS FOR '{reader}'@'localhost'")
        for user, host, password in ((writer, "127.0.0.1", "rw secret"), (reader, "", "new ro")):
            client = [server.client, "--no-defaults", f"-u{user}", f"-p{password}", "-N", "-e",
                      f"SELECT name FROM `{restored}`.items"]  # fmt: skip
            where = (
                ["--protocol=TCP", "-h127.0.0.1", f"-P{server.port}"]
                if host
                else [f"--socket={server.socket}"]
            )
            out = subprocess.run([*client, *where], capture_output=True, text=True, check=False)
            assert out.stdout.strip() == "one", out.stderr
    finally:
        server.drop_database(db)
        server.drop_database(restored)
        server.sql(f"DROP USER IF EXISTS '{writer}'@'%', '{reader}'@'localhost'")


def test_mariadb_no_roles_and_wrong_password_hint(
    repo: Repository, mariadb_server: MariadbServer
) -> None:
    token = secrets.token_hex(3)
    db, writer = f"shop_{token}", f"app_rw_{token}"
    server = mariadb_server
    server.create_database(db)
    server.sql("CREATE TABLE items (id INT PRIMARY KEY)", db=db)
    server.sql(f"CREATE USER '{writer}'@'%'; GRANT SELECT ON `{db}`.* TO '{writer}'@'%'")
    try:
        source = MysqlSource("my", server.url(db))
        snapshot, manifest = backup(repo, source)
        server.sql(f"DROP USER '{writer}'@'%'")
        report = source.restore(repo, snapshot, manifest, server.url(f"{db}_n"),
                                accounts=AccountOptions(roles=False))  # fmt: skip
        assert report.details["accounts"]["ok"] is False
        assert any(writer in w and "--no-roles" in w for w in report.warnings)
        assert server.sql(f"SELECT 1 FROM mysql.user WHERE User = '{writer}'") == ""
        with pytest.raises(RestoreError) as caught:
            source.restore(repo, snapshot, manifest, server.url(f"{db}_w", password="wrong"))
        assert "URL" in caught.value.hint and "empty" not in caught.value.hint
    finally:
        for name in (db, f"{db}_n", f"{db}_w"):
            server.drop_database(name)
        server.sql(f"DROP USER IF EXISTS '{writer}'@'%'")


# ----- through the CLI, and in a drill -----------------------------------------------------------


def _plan(app: Path) -> Path:
    app.mkdir()
    plan = app / "safehold.toml"
    plan.write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "10m"\n'
        '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "${APP_DB_URL}"\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
    )
    return plan


def _out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_cli_restore_into_a_fresh_server_and_drill_roles_check(
    tmp_path: Path, run_cli: RunCli, postgres_server: PostgresServer,
    second_postgres: PostgresServer, app_db: tuple[str, str, str],
) -> None:  # fmt: skip
    db, owner, reader = app_db
    plan = ["--plan", str(_plan(tmp_path / "shop"))]
    env = {"APP_DB_URL": postgres_server.url(db), "SAFEHOLD_DRILL_TMPDIR": str(tmp_path)}
    try:
        assert run_cli(*plan, "init", env=env).returncode == 0
        assert run_cli(*plan, "backup", env=env).returncode == 0
        dry = run_cli(*plan, "restore", "latest", "--into", second_postgres.url(db),
                      "--no-owner", "--dry-run", env=env)  # fmt: skip
        assert "owners: the restoring user (--no-owner)" in _out(dry)
        restored = run_cli(*plan, "restore", "latest", "--into", second_postgres.url(db), env=env)
        output = _out(restored)
        assert restored.returncode == 0, output
        assert re.search(rf"roles: created .*{owner}", output)
        owner_now = second_postgres.psql(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'", db=db
        )
        assert owner_now.strip() == owner
        drill = run_cli(*plan, "drill", env=env)
        assert drill.returncode == 0, _out(drill)
        assert "roles and grants of db came along" in _out(drill)
    finally:
        second_postgres.drop_database(db)
        _drop_roles(second_postgres, owner, reader)


def test_drill_roles_check_fails_naming_what_is_missing(
    repo: Repository, postgres_server: PostgresServer, app_db: tuple[str, str, str],
) -> None:  # fmt: skip
    """The check of the restore (which the drill records) names a grant that did not come
    along: here the backup's record says more than the dump holds."""
    db, _owner, reader = app_db
    source = PostgresSource("pg", postgres_server.url(db))
    snapshot, manifest = backup(repo, source)
    facts = manifest["databases"][db]["accounts"]
    facts.append(["grant", "table", "app.items", reader, "TRUNCATE", ""])
    target = f"{db}_check"
    try:
        report = source.restore(repo, snapshot, manifest, postgres_server.url(target))
        assert report.details["accounts"]["ok"] is False
        assert report.details["accounts"]["missing"] == [
            f"{target}: missing after the restore: GRANT TRUNCATE ON table app.items TO {reader}"
        ]
    finally:
        postgres_server.drop_database(target)
