"""MysqlSource end to end: a real MariaDB, a real repository, restores into new databases
compared row by row with the source."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from safehold.errors import UsageError
from safehold.fs.archiver import Archiver
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.sources.dbtools import DumpError, RestoreError, require_verified
from safehold.sources.mysql import MysqlSource
from tests.servers import MariadbServer
from tests.sources.conftest import SpawnLog, backup

PHOTO = bytes(range(256)) * 3 + b"\x00'\\),(;\n"
NOTES = [
    "line one\nline two\ttab 'quoted' \"double\" \\backslash",
    "),(", "INSERT INTO `x` VALUES (1);", None,
]  # fmt: skip
NAMES = ["Zoë", "東京", "🎉 party", "O'Brien"]


def _assert_no_secret(text: str, password: str) -> None:
    for form in (password, quote(password, safe=""), quote(password)):
        assert form not in text


@pytest.fixture
def new_db(mariadb_server: MariadbServer) -> Iterator[Any]:
    names: list[str] = []

    def make(prefix: str, create: bool = True) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        if create:
            mariadb_server.create_database(name)
        return name

    yield make
    for name in names:
        mariadb_server.drop_database(name)


def _execute(server: MariadbServer, db: str, *statements: str, args: Any = None) -> None:
    conn = server.connect(db)
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, args)
    finally:
        conn.close()


def _fill_shop(server: MariadbServer, db: str) -> None:
    _execute(
        server, db,
        "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL,"
        " photo LONGBLOB, note TEXT) ENGINE=InnoDB",
        "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT,"
        " total DECIMAL(10,2), FOREIGN KEY (customer_id) REFERENCES customers (id))",
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL)",
        "CREATE TABLE `we``ird (name)` (v VARCHAR(20))",
        "CREATE TABLE empty_table (id INT)",
        "CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100",
        "CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW"
        " INSERT INTO audit (order_id) VALUES (NEW.id)",
        # a routine body line that looks like dump data: must not be counted
        "CREATE PROCEDURE add_order(IN c INT, IN t DECIMAL(10,2))\nBEGIN\n"
        "INSERT INTO `orders` (customer_id, total) VALUES (c, t);\nEND",
        "CREATE FUNCTION order_total(c INT) RETURNS DECIMAL(12,2) READS SQL DATA"
        " RETURN (SELECT COALESCE(SUM(total), 0) FROM orders WHERE customer_id = c)",
        "CREATE EVENT cleanup ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE id < 0",
    )  # fmt: skip
    conn = server.connect(db)
    try:
        with conn.cursor() as cursor:
            for i, name in enumerate(NAMES):
                cursor.execute(
                    "INSERT INTO customers (name, photo, note) VALUES (%s, %s, %s)",
                    (name, PHOTO[i:], NOTES[i]),
                )
            cursor.execute(
                "INSERT INTO orders (customer_id, total) "
                "SELECT 1 + seq % 4, seq * 7.31 FROM seq_1_to_500"
            )
            cursor.execute("INSERT INTO `we``ird (name)` VALUES ('a'), ('),('), (NULL)")
    finally:
        conn.close()


def _rows(server: MariadbServer, db: str, tables: list[str]) -> dict[str, list[str]]:
    conn = server.connect(db)
    result: dict[str, list[str]] = {}
    try:
        with conn.cursor() as cursor:
            for table in tables:
                cursor.execute(f"SELECT * FROM `{table.replace('`', '``')}`")
                result[table] = sorted(repr(row) for row in cursor.fetchall())
    finally:
        conn.close()
    return result


def _scalar(server: MariadbServer, db: str, query: str) -> Any:
    conn = server.connect(db)
    try:
        with conn.cursor() as cursor:
            cursor.execute(query)
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def test_backup_and_restore_round_trip(
    mariadb_server: MariadbServer,
    repo: Repository,
    new_db: Any,
    spawn_log: SpawnLog,
    tmp_path: Path,
) -> None:
    db = new_db("shop")
    _fill_shop(mariadb_server, db)
    source = MysqlSource("my-main", mariadb_server.url(db))
    snapshot, manifest = backup(repo, source)

    tables = {"audit": 500, "customers": 4, "empty_table": 0, "orders": 500, "we`ird (name)": 3}
    entry = manifest["databases"][db]
    assert entry["tables"] == tables
    assert entry["rows"] == sum(tables.values())
    assert entry["file"] == f"{db}.sql" and entry["format"] == "sql"
    assert (entry["charset"], entry["collation"]) == ("utf8mb4", "utf8mb4_unicode_ci")
    assert "MariaDB" in manifest["server_version"]
    assert manifest["dump_tool"] in ("mariadb-dump", "mysqldump")
    _assert_no_secret(json.dumps(manifest), mariadb_server.password)

    dump_path = tmp_path / "dump.sql"
    with open(dump_path, "wb") as out:
        assert dump_file(repo, snapshot, f"/my-main/{db}.sql", out) == entry["size"]
    text = dump_path.read_bytes()
    assert b"CREATE DATABASE" not in text and b"USE `" not in text  # restores under any name
    assert b"PROCEDURE `add_order`" in text and b"EVENT `cleanup`" in text

    target = new_db("shop_restored", create=False)
    report = source.restore(repo, snapshot, manifest, mariadb_server.url(target))
    require_verified(report)
    assert report.details["verified"] is True
    assert report.details["rows"] == sum(tables.values())
    assert report.details["databases"][target]["created"] is True
    assert "customers: 4 rows (matches backup)" in report.summary
    assert "orders: 500 rows (matches backup)" in report.summary
    assert report.seconds > 0
    _assert_no_secret(repr(report), mariadb_server.password)

    assert _rows(mariadb_server, target, list(tables)) == _rows(mariadb_server, db, list(tables))
    assert _scalar(mariadb_server, target, "SELECT photo FROM customers WHERE id = 1") == PHOTO
    assert _scalar(mariadb_server, target, "SELECT name FROM customers WHERE id = 3") == "🎉 party"
    assert _scalar(mariadb_server, target, "SELECT COUNT(*) FROM big_orders") == _scalar(
        mariadb_server, db, "SELECT COUNT(*) FROM big_orders"
    )
    assert _scalar(mariadb_server, target, "SELECT order_total(1)") == _scalar(
        mariadb_server, db, "SELECT order_total(1)"
    )
    assert _scalar(
        mariadb_server, target,
        "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()",
    ) == 1  # fmt: skip
    _execute(mariadb_server, target, "CALL add_order(2, 5.00)")  # procedure + trigger restored
    assert _scalar(mariadb_server, target, "SELECT COUNT(*) FROM audit") == 501
    assert _scalar(mariadb_server, target, "SELECT MAX(id) FROM orders") > 500  # AUTO_INCREMENT

    # the password never reached a command line: a 0600 option file, deleted afterwards
    tool_calls = [
        argv for argv, _ in spawn_log.calls if any(a.startswith("--protocol=") for a in argv)
    ]
    assert len(tool_calls) == 2  # the dump and the restore
    for argv in tool_calls:
        for arg in argv:
            _assert_no_secret(arg, mariadb_server.password)
        assert argv[1].startswith("--defaults-file=")
        assert not os.path.exists(argv[1].split("=", 1)[1])


def test_backup_while_writing_is_one_point_in_time(
    mariadb_server: MariadbServer, repo: Repository, new_db: Any
) -> None:
    db = new_db("busy")
    _execute(
        mariadb_server, db,
        "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload TEXT)",
        "CREATE TABLE items (order_id BIGINT NOT NULL, k INT NOT NULL)",
        "INSERT INTO orders (payload) SELECT REPEAT(MD5(seq), 8) FROM seq_1_to_40000",
        "INSERT INTO items SELECT id, 1 FROM orders UNION ALL SELECT id, 2 FROM orders",
    )  # fmt: skip
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        conn = mariadb_server.connect(db, autocommit=False)
        try:
            with conn.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute("INSERT INTO orders (payload) VALUES ('w')")
                    order_id = cursor.lastrowid
                    cursor.execute(
                        "INSERT INTO items VALUES (%s, 1), (%s, 2)", (order_id, order_id)
                    )
                    conn.commit()
                    written[0] += 1
        finally:
            conn.close()

    def count() -> int:
        return int(_scalar(mariadb_server, db, "SELECT COUNT(*) FROM orders"))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20:
            time.sleep(0.01)
        before = count()
        source = MysqlSource("my", mariadb_server.url(db))
        snapshot, manifest = backup(repo, source)
        mark = written[0]
        while written[0] < mark + 20:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    after = count()
    tables = manifest["databases"][db]["tables"]
    assert before <= tables["orders"] <= after
    assert before < after
    assert tables["items"] == 2 * tables["orders"]  # one moment for both tables

    target = new_db("busy_restored", create=False)
    report = source.restore(repo, snapshot, manifest, mariadb_server.url(target))
    assert report.details["verified"] is True, report.warnings
    assert _scalar(mariadb_server, target, "SELECT COUNT(*) FROM orders") == tables["orders"]
    assert _scalar(mariadb_server, target, "SELECT COUNT(*) FROM items") == tables["items"]


def test_missing_database_fails_the_stream_naming_it_without_password(
    mariadb_server: MariadbServer, repo: Repository
) -> None:
    source = MysqlSource("my", mariadb_server.url(""), databases=["no_such_db"])
    item, users = source.items()  # the dump, and users.json beside it
    assert users.components[-1] == b"users.json"
    assert item.stream is not None
    with pytest.raises(DumpError) as caught, item.stream() as stream:
        stream.read()
    message = str(caught.value)
    assert "no_such_db" in message and "does not exist" in message
    _assert_no_secret(message, mariadb_server.password)

    result = Archiver(repo).backup_items(source.items(), paths=["/my"])
    assert result.snapshot.safehold["complete"] is False
    [(path, error)] = result.stats.errors
    assert path == "/my/no_such_db.sql" and "no_such_db" in error


def test_failing_dump_tool_raises_on_leaving_the_stream(
    mariadb_server: MariadbServer, tmp_path: Path, new_db: Any
) -> None:
    db = new_db("fails")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "mariadb-dump"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --defaults-file=*) f="${a#--defaults-file=}";; esac; done\n'
        'printf "partial"\n'
        'echo "simulated failure; option file $f mode $(stat -c %a "$f")" >&2\n'
        "exit 2\n"
    )
    fake.chmod(0o755)
    source = MysqlSource("my", mariadb_server.url(db), bin_dir=str(fake_bin))
    item, _users = source.items()
    assert item.stream is not None
    with pytest.raises(DumpError) as caught, item.stream() as stream:
        assert stream.read() == b"partial"
    message = str(caught.value)
    assert f"database {db}" in message and "exit status 2" in message
    match = re.search(r"option file (\S+) mode 600", message)
    assert match is not None, message
    assert not os.path.exists(match.group(1))
    _assert_no_secret(message, mariadb_server.password)


def test_two_databases_and_restore_choice(
    mariadb_server: MariadbServer, repo: Repository, new_db: Any
) -> None:
    first, second = new_db("one"), new_db("two")
    _execute(mariadb_server, first, "CREATE TABLE t (v INT)", "INSERT INTO t VALUES (1), (2)")
    _execute(mariadb_server, second, "CREATE TABLE u (v TEXT)", "INSERT INTO u VALUES ('x')")
    source = MysqlSource("my", mariadb_server.url(""), databases=[first, second])
    snapshot, manifest = backup(repo, source)
    assert manifest["databases"][first]["tables"] == {"t": 2}
    assert manifest["databases"][second]["tables"] == {"u": 1}

    target = new_db("chosen", create=False)
    with pytest.raises(UsageError, match="holds 2 databases"):
        source.restore(repo, snapshot, manifest, mariadb_server.url(target))
    report = source.restore(
        repo, snapshot, manifest, mariadb_server.url(target) + f"?source_db={second}"
    )
    assert report.summary == ["u: 1 rows (matches backup)"]
    assert report.details["databases"][target]["source_database"] == second
    assert _scalar(mariadb_server, target, "SELECT v FROM u") == "x"
    with pytest.raises(UsageError, match="live database"):
        source.restore(repo, snapshot, manifest, mariadb_server.url(""))


def test_restore_refuses_a_database_with_tables(
    mariadb_server: MariadbServer, repo: Repository, new_db: Any
) -> None:
    db, occupied = new_db("src"), new_db("occupied")
    _execute(mariadb_server, db, "CREATE TABLE t (v INT)")
    _execute(mariadb_server, occupied, "CREATE TABLE already_here (v INT)")
    source = MysqlSource("my", mariadb_server.url(db))
    snapshot, manifest = backup(repo, source)
    with pytest.raises(RestoreError, match="already has tables") as caught:
        source.restore(repo, snapshot, manifest, mariadb_server.url(occupied))
    _assert_no_secret(str(caught.value), mariadb_server.password)
    with pytest.raises(UsageError, match="live database"):
        source.restore(repo, snapshot, manifest, mariadb_server.url(db))
    empty = new_db("empty")
    report = source.restore(repo, snapshot, manifest, mariadb_server.url(empty))
    assert report.details["verified"] is True
    assert report.details["databases"][empty]["created"] is False


def test_failing_restore_raises_with_the_clients_message(
    mariadb_server: MariadbServer, repo: Repository, new_db: Any, tmp_path: Path
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "mariadb-dump"
    fake.write_text("#!/bin/sh\nprintf 'CREATE TABLE `t` (v INT);\\nTHIS IS NOT SQL;\\n'\n")
    fake.chmod(0o755)
    db = new_db("src")
    broken = MysqlSource("my", mariadb_server.url(db), bin_dir=str(fake_bin))
    snapshot, manifest = backup(repo, broken)
    assert manifest["databases"][db]["tables"] == {"t": 0}
    source = MysqlSource("my", mariadb_server.url(db))
    target = new_db("broken", create=False)
    with pytest.raises(RestoreError) as caught:
        source.restore(repo, snapshot, manifest, mariadb_server.url(target))
    message = str(caught.value)
    assert f"restore into database {target} failed" in message and "ERROR 1064" in message
    _assert_no_secret(message, mariadb_server.password)

    wrong_password = mariadb_server.url(new_db("denied", create=False), password="wrong")
    with pytest.raises(RestoreError, match="Access denied") as caught:
        source.restore(repo, snapshot, manifest, wrong_password)
    _assert_no_secret(str(caught.value), mariadb_server.password)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("mysql://x@127.0.0.1:3306/app", True),
        ("mariadb://x:other@localhost/app", True),  # default port 3306
        ("mysql://x@[::1]:3306/app", True),
        ("mysql://x@localhost/app?unix_socket=/run/mysqld/mysqld.sock", True),
        ("mysql://x@localhost:3306", True),  # no database: all under their own names
        ("mysql://x@localhost:3306?source_db=app", True),
        ("mysql://x@localhost:3306/app_copy?source_db=app", False),
        ("mysql://x@localhost:3306/app_restore", False),
        ("mysql://x@localhost:3307/app", False),
        ("mysql://x@db.example.com:3306/app", False),
    ],
)
def test_is_production_target(target: str, expected: bool) -> None:
    source = MysqlSource("my", "mysql://u:secret@localhost:3306/app")
    assert source.is_production_target(target) is expected


def test_redaction_and_bad_urls() -> None:
    source = MysqlSource("my", "mariadb://u:s%40cret@db.internal/app")
    assert source.production_location() == "mariadb://u:***@db.internal/app"
    every = MysqlSource("my", "mysql://u@db.internal")
    assert every.is_production_target("mysql://db.internal/anything") is True
    with pytest.raises(UsageError) as caught:
        MysqlSource("my", "postgresql://u:hunter2@host/db")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(UsageError, match="unsupported"):
        MysqlSource("my", "mysql://u:hunter2@host/db?sslmode=require")
