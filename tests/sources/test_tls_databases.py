"""Managed-style databases: PostgreSQL and MariaDB servers that accept TCP only over TLS,
backed up and restored with the TLS options in the URL; and a pg_dump older than the server
refused before the dump, with the exact fix."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from safehold.repo.repository import Repository
from safehold.sources.dbtools import DumpError, require_verified
from safehold.sources.mysql import MyLocation, MysqlSource
from safehold.sources.postgres import (
    PostgresSource,
    dump_tool_problem,
    server_major,
    tool_major,
)
from tests.servers import MariadbServer, PostgresServer
from tests.sources.conftest import backup


def _pg_url(server: PostgresServer, db: str, query: str) -> str:
    return f"{server.url(db)}?{query}"


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_postgres_over_tls_backs_up_and_restores(
    postgres_tls_server: PostgresServer, repo: Repository, mode: str
) -> None:
    server = postgres_tls_server
    assert server.tls is not None
    db, target = f"tls_{mode.replace('-', '_')}", f"tls_{mode.replace('-', '_')}_restored"
    server.create_database(db)
    server.psql("CREATE TABLE notes (id int PRIMARY KEY, body text)", db=db)
    server.psql("INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 30) g", db=db)
    query = f"sslmode={mode}"
    if mode == "verify-full":
        query += f"&sslrootcert={quote(str(server.tls.ca))}"
    with pytest.raises(DumpError, match=r"no encryption|SSL off|pg_hba"):
        PostgresSource("plain", _pg_url(server, db, "sslmode=disable")).probe()

    source = PostgresSource("pg-tls", _pg_url(server, db, query), include_globals=False)
    snapshot, manifest = backup(repo, source)
    assert manifest["databases"][db]["rows"] == 30
    report = require_verified(
        source.restore(repo, snapshot, manifest, _pg_url(server, target, query))
    )
    assert report.details["rows"] == 30
    assert server.psql("SELECT count(*) FROM notes", db=target).strip() == "30"


def test_mariadb_over_tls_backs_up_and_restores(
    mariadb_tls_server: MariadbServer, repo: Repository
) -> None:
    server = mariadb_tls_server
    assert server.tls is not None
    server.create_database("tls_shop")
    server.sql("CREATE TABLE items (id INT PRIMARY KEY, name TEXT)", db="tls_shop")
    server.sql("INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c')", db="tls_shop")
    verified = f"ssl_ca={quote(str(server.tls.ca))}"
    with pytest.raises(DumpError, match=r"secure transport|Access denied"):
        MysqlSource("plain", server.url("tls_shop") + "?ssl=false").probe()
    assert MysqlSource("enc", server.url("tls_shop") + "?ssl=true").probe()[0]

    source = MysqlSource("my-tls", f"{server.url('tls_shop')}?{verified}")
    snapshot, manifest = backup(repo, source)
    assert manifest["databases"]["tls_shop"]["rows"] == 3
    target = server.url("tls_shop_restored") + f"?{verified}"
    report = require_verified(source.restore(repo, snapshot, manifest, target))
    assert report.details["rows"] == 3
    assert server.sql("SELECT COUNT(*) FROM items", db="tls_shop_restored").strip() == "3"


def test_mysql_tls_options_reach_the_tools_and_pymysql() -> None:
    location = MyLocation.parse("mysql://u:pw@db.example:3306/app?ssl_ca=/etc/ca.pem&ssl=true")
    assert location.tls.tool_args() == ["--ssl", "--ssl-ca=/etc/ca.pem", "--ssl-verify-server-cert"]
    assert location.tls.pymysql_options() == {"ssl": {"check_hostname": True, "ca": "/etc/ca.pem"}}
    assert MyLocation.parse("mysql://u@h/app?ssl=false").tls.tool_args() == ["--skip-ssl"]
    assert MyLocation.parse("mysql://u@h/app").tls.pymysql_options() == {}


def test_pg_dump_older_than_the_server_is_refused_with_the_exact_fix() -> None:
    assert tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == 15
    assert tool_major("pg_dump (PostgreSQL) 9.6.24") == 9
    assert tool_major("") is None
    assert server_major(170002) == 17 and server_major(90624) == 9
    assert dump_tool_problem(15, 15, "pg_dump") is None
    assert dump_tool_problem(15, 17, "pg_dump") is None
    problem = dump_tool_problem(17, 15, "/usr/bin/pg_dump")
    assert problem == (
        "pg_dump 15 is older than the PostgreSQL 17 server and cannot dump it",
        "install postgresql-client-17 (Debian/Ubuntu, from apt.postgresql.org); "
        "safehold uses /usr/lib/postgresql/17/bin when present",
    )
    missing = dump_tool_problem(16, None, "/nowhere/pg_dump")
    assert missing is not None and missing[0] == "/nowhere/pg_dump does not run"
