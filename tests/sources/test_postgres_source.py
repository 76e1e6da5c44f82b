"""PostgresSource end to end: a real PostgreSQL 15, a real repository, restores into new
databases compared row by row with the source."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from safehold.errors import SafeholdError, UsageError
from safehold.fs.archiver import Archiver
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.sources.dbtools import DumpError, RestoreError, require_verified
from safehold.sources.postgres import PostgresSource
from tests.servers import PostgresServer
from tests.sources.conftest import SpawnLog, backup

PHOTO = bytes(range(256)) * 3 + b"\x00\x00end"
NOTES = ["line one\nline two\ttab 'quoted' \"double\" \\backslash", "),(", "", None]


def _secret_forms(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote(password)]


def _assert_no_secret(text: str, password: str) -> None:
    for form in _secret_forms(password):
        assert form not in text


@pytest.fixture
def new_db(postgres_server: PostgresServer) -> Iterator[Any]:
    """Makes uniquely named databases (names only, or created); drops them afterwards."""
    names: list[str] = []

    def make(prefix: str, create: bool = True) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        if create:
            postgres_server.create_database(name)
        return name

    yield make
    for name in names:
        postgres_server.drop_database(name)


def _fill_shop(server: PostgresServer, db: str) -> None:
    with server.connect(db) as conn:
        conn.execute(
            '''
            CREATE SCHEMA app;
            CREATE TABLE public.customers (
                id serial PRIMARY KEY, name text NOT NULL, photo bytea, note text);
            CREATE TABLE app.orders (
                id bigserial PRIMARY KEY, customer_id int REFERENCES public.customers(id),
                total numeric(10, 2), created timestamptz DEFAULT now());
            CREATE TABLE app.audit (id serial PRIMARY KEY, order_id bigint NOT NULL);
            CREATE FUNCTION app.audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN INSERT INTO app.audit (order_id) VALUES (NEW.id); RETURN NEW; END $$;
            CREATE TRIGGER orders_audit AFTER INSERT ON app.orders
              FOR EACH ROW EXECUTE FUNCTION app.audit_order();
            CREATE VIEW public.big_orders AS SELECT * FROM app.orders WHERE total > 100;
            CREATE TABLE public."Mixed Case" ("Weird ""col""" text);
            CREATE TABLE public.empty_table (id int);
            '''
        )
        for i, name in enumerate(["Zoë", "東京", "🎉 party", "O'Brien"]):
            conn.execute(
                "INSERT INTO customers (name, photo, note) VALUES (%s, %s, %s)",
                (name, PHOTO[i:], NOTES[i]),
            )
        conn.execute(
            "INSERT INTO app.orders (customer_id, total) "
            "SELECT 1 + g % 4, (g * 7.31)::numeric(10, 2) FROM generate_series(1, 500) g"
        )
        conn.execute("""INSERT INTO "Mixed Case" VALUES ('a'), ('b'), (NULL)""")


def _all_rows(server: PostgresServer, db: str, tables: list[str]) -> dict[str, list[str]]:
    """Every row of every table as text, ordered: equal means equal data."""
    rows: dict[str, list[str]] = {}
    with server.connect(db) as conn:
        for table in tables:
            schema, name = table.split(".", 1)
            query = f'SELECT t::text FROM "{schema}"."{name.replace(chr(34), chr(34) * 2)}" t'
            rows[table] = sorted(str(r[0]) for r in conn.execute(query).fetchall())
    return rows


def test_backup_and_restore_round_trip(
    postgres_server: PostgresServer,
    repo: Repository,
    new_db: Any,
    spawn_log: SpawnLog,
    tmp_path: Path,
) -> None:
    db = new_db("shop")
    _fill_shop(postgres_server, db)
    source = PostgresSource("pg-main", postgres_server.url(db))
    snapshot, manifest = backup(repo, source)

    tables = {
        "app.audit": 500, "app.orders": 500, "public.Mixed Case": 3, "public.customers": 4,
        "public.empty_table": 0,
    }  # fmt: skip
    entry = manifest["databases"][db]
    assert entry["tables"] == tables
    assert entry["rows"] == sum(tables.values())
    assert entry["file"] == f"{db}.pgdump"
    assert entry["format"] == "custom" and entry["compress"] == 0
    assert entry["encoding"] == "UTF8"
    assert entry["pg_dump_version"].startswith("pg_dump (PostgreSQL) ")
    assert manifest["server_version"].startswith("15")
    assert manifest["include_globals"] is True
    assert manifest["globals"]["role_passwords"] is True
    assert manifest["location"] == postgres_server.url(db).replace(
        quote(postgres_server.password, safe=""), "***"
    )
    _assert_no_secret(json.dumps(manifest), postgres_server.password)

    # the stream's size is the stored file's size, and the dump is a custom-format archive
    dump_path = tmp_path / "dump.pgdump"
    with open(dump_path, "wb") as out:
        assert dump_file(repo, snapshot, f"/pg-main/{db}.pgdump", out) == entry["size"]
    assert dump_path.read_bytes()[:5] == b"PGDMP"
    with open(dump_path, "wb") as out:
        dump_file(repo, snapshot, "/pg-main/globals.sql", out)
    globals_sql = dump_path.read_text()
    assert f"CREATE ROLE {postgres_server.user}" in globals_sql
    assert manifest["globals"]["size"] == len(globals_sql.encode())

    target_db = new_db("shop_restored", create=False)
    report = source.restore(repo, snapshot, manifest, postgres_server.url(target_db))
    require_verified(report)
    assert report.details["verified"] is True
    assert report.details["tables"] == len(tables)
    assert report.details["rows"] == sum(tables.values())
    assert report.details["databases"][target_db]["created"] is True
    assert "public.customers: 4 rows (matches backup)" in report.summary
    assert "app.orders: 500 rows (matches backup)" in report.summary
    assert any("globals.sql" in line for line in report.summary)
    assert not report.warnings
    assert report.seconds > 0
    _assert_no_secret(repr(report), postgres_server.password)

    assert _all_rows(postgres_server, target_db, list(tables)) == _all_rows(
        postgres_server, db, list(tables)
    )
    with postgres_server.connect(target_db) as conn:
        photo = conn.execute("SELECT photo FROM customers WHERE name = 'Zoë'").fetchone()
        assert photo is not None and bytes(photo[0]) == PHOTO
        assert conn.execute("SELECT count(*) FROM big_orders").fetchone() == (
            conn.execute("SELECT count(*) FROM app.orders WHERE total > 100").fetchone()
        )
        # the trigger and the sequences came along
        new_id = conn.execute(
            "INSERT INTO app.orders (customer_id, total) VALUES (1, 1) RETURNING id"
        ).fetchone()
        assert new_id == (501,)
        assert conn.execute("SELECT count(*) FROM app.audit").fetchone() == (501,)

    # the password never reached a command line; the tools got it through the environment
    assert spawn_log.calls
    for argv, env in spawn_log.calls:
        for arg in argv:
            _assert_no_secret(arg, postgres_server.password)
        if any(arg.startswith("--dbname=") for arg in argv):
            assert env.get("PGPASSWORD") == postgres_server.password
    assert any(a.startswith("--snapshot=") for argv, _ in spawn_log.calls for a in argv)


def test_backup_while_writing_is_one_point_in_time(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    db = new_db("busy")
    with postgres_server.connect(db) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, payload text);"
            "CREATE TABLE items (order_id bigint NOT NULL, k int NOT NULL);"
            "INSERT INTO orders (payload) SELECT repeat(md5(g::text), 8) "
            "FROM generate_series(1, 40000) g;"
            "INSERT INTO items SELECT id, k FROM orders, generate_series(1, 2) k;"
        )
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with postgres_server.connect(db, autocommit=False) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "INSERT INTO orders (payload) VALUES ('w') RETURNING id"
                ).fetchone()
                assert row is not None
                conn.execute("INSERT INTO items VALUES (%s, 1), (%s, 2)", (row[0], row[0]))
                conn.commit()
                written[0] += 1

    def count() -> int:
        with postgres_server.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM orders").fetchone()
            assert row is not None
            return int(row[0])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20:
            time.sleep(0.01)
        before = count()
        source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
        snapshot, manifest = backup(repo, source)
        mark = written[0]
        while written[0] < mark + 20:  # keep writing after the backup, too
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    after = count()
    tables = manifest["databases"][db]["tables"]
    assert before <= tables["public.orders"] <= after
    assert before < after
    # both tables are counted at the same moment: every order has exactly its two items
    assert tables["public.items"] == 2 * tables["public.orders"]

    target = new_db("busy_restored", create=False)
    report = source.restore(repo, snapshot, manifest, postgres_server.url(target))
    assert report.details["verified"] is True, report.warnings
    with postgres_server.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (tables["public.orders"],)
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (tables["public.items"],)


def test_missing_database_fails_the_stream_naming_it_without_password(
    postgres_server: PostgresServer, repo: Repository
) -> None:
    source = PostgresSource(
        "pg", postgres_server.url("postgres"), databases=["no_such_db"], include_globals=False
    )
    [item] = source.items()
    assert item.stream is not None
    with pytest.raises(DumpError) as caught, item.stream() as stream:
        stream.read()
    message = str(caught.value)
    assert "no_such_db" in message and "does not exist" in message
    _assert_no_secret(message, postgres_server.password)
    assert isinstance(caught.value, SafeholdError)

    # through the archiver: the snapshot is saved, marked incomplete, naming the database
    result = Archiver(repo).backup_items(source.items(), paths=["/pg"])
    assert result.snapshot.safehold["complete"] is False
    [(path, error)] = result.stats.errors
    assert path == "/pg/no_such_db.pgdump" and "no_such_db" in error
    _assert_no_secret(error, postgres_server.password)


def test_failing_pg_dump_raises_on_leaving_the_stream_redacted(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "pg_dump"
    fake.write_text(
        '#!/bin/sh\nprintf "partial"\n'
        'echo "pg_dump: error: simulated failure (password $PGPASSWORD)" >&2\nexit 3\n'
    )
    fake.chmod(0o755)
    source = PostgresSource(
        "pg", postgres_server.url("postgres"), include_globals=False, bin_dir=str(fake_bin)
    )
    [item] = source.items()
    assert item.stream is not None
    opened = False
    with pytest.raises(DumpError) as caught, item.stream() as stream:
        opened = True
        assert stream.read() == b"partial"
    assert opened  # entering worked; leaving raised
    message = str(caught.value)
    assert "database postgres" in message and "exit status 3" in message
    assert "simulated failure (password ***)" in message
    _assert_no_secret(message, postgres_server.password)


def test_two_databases_and_restore_choice(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    first, second = new_db("one"), new_db("two")
    postgres_server.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)", first)
    postgres_server.psql("CREATE TABLE u (v text); INSERT INTO u VALUES ('x')", second)
    source = PostgresSource(
        "pg", postgres_server.url("postgres"), databases=[first, second], include_globals=False
    )
    snapshot, manifest = backup(repo, source)
    assert manifest["databases"][first]["tables"] == {"public.t": 2}
    assert manifest["databases"][second]["tables"] == {"public.u": 1}
    assert manifest["globals"] is None

    target = new_db("chosen", create=False)
    with pytest.raises(UsageError, match="holds 2 databases"):
        source.restore(repo, snapshot, manifest, postgres_server.url(target))
    report = source.restore(
        repo, snapshot, manifest, postgres_server.url(target) + f"?source_db={second}"
    )
    assert report.summary == ["public.u: 1 rows (matches backup)"]
    assert report.details["databases"][target]["source_database"] == second
    assert postgres_server.psql("SELECT v FROM u", target) == "x\n"

    # the same server under the same names is the production data
    with pytest.raises(UsageError, match="live database"):
        source.restore(repo, snapshot, manifest, postgres_server.url(""))


def test_restore_refuses_a_database_with_tables(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    db, occupied = new_db("src"), new_db("occupied")
    postgres_server.psql("CREATE TABLE t (v int)", db)
    postgres_server.psql("CREATE TABLE already_here (v int)", occupied)
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
    snapshot, manifest = backup(repo, source)
    with pytest.raises(RestoreError, match="already has tables") as caught:
        source.restore(repo, snapshot, manifest, postgres_server.url(occupied))
    _assert_no_secret(str(caught.value), postgres_server.password)
    with pytest.raises(UsageError, match="live database"):
        source.restore(repo, snapshot, manifest, postgres_server.url(db))
    # an existing but empty database is fine
    empty = new_db("empty")
    report = source.restore(repo, snapshot, manifest, postgres_server.url(empty))
    assert report.details["verified"] is True
    assert report.details["databases"][empty]["created"] is False


def test_non_superuser_backs_up_without_role_passwords(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    role, password = f"app_{uuid.uuid4().hex[:6]}", "app's pw/€"
    postgres_server.psql(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'app''s pw/€'")
    db = new_db("owned")
    postgres_server.psql(f'ALTER DATABASE "{db}" OWNER TO {role}')
    postgres_server.psql(
        f"SET ROLE {role}; CREATE TABLE t (v bytea); INSERT INTO t VALUES ('\\x00ff')", db
    )
    source = PostgresSource("pg", postgres_server.url(db, user=role, password=password))
    snapshot, manifest = backup(repo, source)
    assert manifest["globals"]["role_passwords"] is False
    assert manifest["databases"][db]["tables"] == {"public.t": 1}
    target = new_db("owned_copy", create=False)
    try:
        report = source.restore(
            repo, snapshot, manifest, postgres_server.url(target, user=role, password=password)
        )
        assert report.details["verified"] is True, report.warnings
    finally:
        postgres_server.drop_database(target)
        postgres_server.psql(f'ALTER DATABASE "{db}" OWNER TO postgres')
        postgres_server.psql(f"DROP OWNED BY {role} CASCADE", db)
        postgres_server.psql(f"DROP ROLE {role}")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("postgresql://x@127.0.0.1:5432/app", True),
        ("postgresql://x:other@localhost/app", True),  # default port 5432
        ("postgresql://x@[::1]:5432/app", True),
        ("postgresql:///app?host=/var/run/postgresql", True),  # unix socket dir
        ("postgres://x@LOCALHOST:5432/app", True),
        ("postgresql://x@localhost:5432", True),  # no database: all under their own names
        ("postgresql://x@localhost:5432?source_db=app", True),
        ("postgresql://x@localhost:5432/app_copy?source_db=app", False),
        ("postgresql://x@localhost:5432/app_restore", False),
        ("postgresql://x@localhost:5433/app", False),
        ("postgresql://x@db.example.com:5432/app", False),
        ("postgresql://x@127.0.0.1:6543/app", False),
    ],
)
def test_is_production_target(target: str, expected: bool) -> None:
    source = PostgresSource("pg", "postgresql://u:secret@localhost:5432/app")
    assert source.is_production_target(target) is expected


def test_is_production_target_for_all_databases_and_redaction() -> None:
    source = PostgresSource("pg", "postgresql://u:s%40cret@db.internal:5432")
    assert source.production_location() == "postgresql://u:***@db.internal:5432"
    assert source.is_production_target("postgresql://db.internal/anything") is True
    assert source.is_production_target("postgresql://db.internal:5433/anything") is False
    assert source.is_production_target("postgresql://localhost/anything") is False
    listed = PostgresSource("pg", "postgresql://u@db.internal", databases=["a", "b"])
    assert listed.is_production_target("postgresql://db.internal/b") is True
    assert listed.is_production_target("postgresql://db.internal/c") is False


def test_bad_urls_are_usage_errors_without_password() -> None:
    with pytest.raises(UsageError) as caught:
        PostgresSource("pg", "mysql://u:hunter2@host/db")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(UsageError):
        PostgresSource("Bad Name", "postgresql://localhost/db")
