"""The bad deploy, end to end through the CLI on real databases (PostgreSQL, MariaDB, SQLite),
with a files source beside the database: a daily backup, then 30% of `orders` deleted, 10% of
`customers` updated, new rows inserted, a table without a primary key changed, uploads
deleted and overwritten. Then `incident start` (freeze, held evidence, scope); `db diff`
counts exactly; `db recover` brings the missing rows back in one transaction, keeps the new
rows, leaves changed rows unless `--changed restore`, lists conflicts and writes nothing
without `--skip-conflicts`, `--dry-run` writes nothing; `restore --only-missing` brings back
only the deleted uploads; `restore --table` copies whole tables into a new database;
`incident end`. Afterwards `latest` is still the daily backup, the next drill passes on it,
the held evidence survives `forget --prune`, and the runbook's incident page lists what ran.
(Incident details, holds and only-missing decisions are tested on their own in
test_incident_cli.py, test_holds_cli.py and test_restore_only_missing.py.)"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PASSWORD, RunCli

pytestmark = pytest.mark.slow


@dataclass
class Db:
    kind: str
    source: str  # the [[sources]] lines after name/type
    env: dict[str, str]
    execute: Callable[[str], None]
    scalar: Callable[[str], Any]
    secret: str = ""
    table_target: str = ""  # where `restore --table` goes
    target_scalar: Callable[[str], Any] | None = None


SCHEMA = {
    "postgres": [
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text)",
        "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL "
        "REFERENCES customers(id), amount numeric(10,2), note text, created timestamptz "
        "DEFAULT '2026-01-01 12:00:00+00')",
        "CREATE TABLE events (msg text, n int)",
    ],
    "mysql": [
        "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) NOT NULL "
        "UNIQUE, name TEXT) ENGINE=InnoDB",
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, "
        "amount DECIMAL(10,2), note TEXT, created TIMESTAMP NULL DEFAULT '2026-01-01 12:00:00', "
        "FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB",
        "CREATE TABLE events (msg TEXT, n INT) ENGINE=InnoDB",
    ],
    "sqlite": [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL "
        "UNIQUE, name TEXT)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INT NOT NULL "
        "REFERENCES customers(id), amount NUMERIC, note TEXT, created TEXT "
        "DEFAULT '2026-01-01 12:00:00')",
        "CREATE TABLE events (msg TEXT, n INT)",
    ],
}


def _load(db: Db) -> None:
    for statement in SCHEMA[db.kind]:
        db.execute(statement)
    for i in range(1, 101):
        db.execute(
            f"INSERT INTO customers (id, email, name) VALUES ({i}, 'c{i}@x.test', 'customer {i}')"
        )
    values = ", ".join(f"({i}, {i % 50 + 1}, {i}.50, 'order {i}')" for i in range(1, 201))
    db.execute(f"INSERT INTO orders (id, customer_id, amount, note) VALUES {values}")
    db.execute(
        "INSERT INTO events (msg, n) VALUES "
        + ", ".join(f"('event {i % 40}', {i % 40})" for i in range(50))
    )
    if db.kind == "postgres":  # explicit ids do not move a PostgreSQL sequence
        db.execute("SELECT setval('customers_id_seq', 100), setval('orders_id_seq', 200)")


def _bad_deploy(db: Db) -> None:
    db.execute("DELETE FROM orders WHERE id % 10 IN (1, 2, 3)")  # 60 rows: 30%
    db.execute("UPDATE customers SET name = 'renamed' WHERE id % 10 = 0")  # 10 rows: 10%
    db.execute("DELETE FROM customers WHERE id = 99")  # its email is then taken by a new row
    db.execute(
        "INSERT INTO customers (email, name) VALUES ('new1@x.test', 'n1'), "
        "('new2@x.test', 'n2'), ('new3@x.test', 'n3')"
    )
    db.execute("INSERT INTO customers (id, email, name) VALUES (500, 'c99@x.test', 'taken')")
    db.execute(
        "INSERT INTO orders (customer_id, amount, note) VALUES (1, 1.00, 'new a'), "
        "(2, 2.00, 'new b'), (500, 3.00, 'new c')"
    )
    # no primary key: 'event 1' appears twice, 'event 2' twice; one of each goes, one new
    db.execute("DELETE FROM events WHERE n IN (1, 2)")
    db.execute(
        "INSERT INTO events (msg, n) VALUES ('event 1', 1), ('event 2', 2), ('event 99', 99)"
    )


def _ok(result: subprocess.CompletedProcess[str], db: Db, code: int = 0) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    if db.secret:
        assert db.secret not in output
    return result.stdout


def _tables(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["table"].rsplit(".", 1)[-1]: t for t in report["tables"]}


def _evidence(snapshots: list[dict[str, Any]]) -> set[str]:
    return {s["id"] for s in snapshots if s["reason"] == "evidence"}


def _scenario(tmp_path: Path, run_cli: RunCli, db: Db) -> None:
    app = tmp_path / "shop"
    uploads = app / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    for number in range(1, 11):
        (uploads / f"u{number}.png").write_bytes(bytes([number]) * 3000)
    (app / "safehold.toml").write_text(
        f'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1h"\nrto = "15m"\n'
        f'[[sources]]\nname = "db"\ntype = "{db.kind}"\n{db.source}\n'
        '[[sources]]\nname = "uploads"\ntype = "files"\npaths = ["uploads"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
        "[retention]\nkeep_last = 1\n"
        '[incident]\nfreeze = "touch frozen.marker"\nunfreeze = "rm frozen.marker"\n'
    )
    plan = ["--plan", str(app / "safehold.toml")]

    def cli(*args: str, code: int = 0) -> str:
        return _ok(run_cli(*plan, *args, env=db.env), db, code)

    def snapshots() -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(cli("snapshots", "--json"))
        return listed

    _load(db)
    cli("init")
    cli("backup", "--reason", "daily")
    daily = snapshots()[-1]
    assert daily["reason"] == "daily"
    _bad_deploy(db)
    for number in (1, 2, 3):  # three uploads gone, one overwritten, one new
        (uploads / f"u{number}.png").unlink()
    (uploads / "u4.png").write_bytes(b"overwritten by the deploy")
    (uploads / "fresh.png").write_bytes(b"a real upload after the backup")

    # incident start: writes frozen, everything captured (held), the scope per table
    started = json.loads(cli("incident", "start", "--why", "orders gone", "--json"))
    assert (app / "frozen.marker").exists()
    assert started["evidence"]["complete"] is True
    incident_evidence = started["evidence"]["snapshot"]
    db_scope = next(item for item in started["scope"] if item["source"] == "db")
    assert db_scope["baseline"] == daily["name"]
    scope = {t["table"].rsplit(".", 1)[-1]: (t["live_rows"], t["backup_rows"])
             for t in db_scope["tables"]}  # fmt: skip
    assert scope == {"orders": (143, 200), "customers": (103, 100), "events": (49, 50)}
    files_scope = next(item for item in started["scope"] if item["source"] == "uploads")
    assert files_scope["files"]["missing"] == 3 and files_scope["files"]["added"] == 1

    report = json.loads(cli("db", "diff", "latest", "--source", "db", "--json"))
    assert report["snapshot"]["id"] == daily["id"]  # latest: the daily backup, not evidence
    tables = _tables(report)
    assert set(tables) == {"customers", "orders", "events"}
    orders, customers, events = tables["orders"], tables["customers"], tables["events"]
    assert (orders["missing"], orders["added"], orders["changed"]) == (60, 3, 0)
    assert orders["compared_by"] == "primary key" and orders["key"] == ["id"]
    assert (orders["snapshot_rows"], orders["live_rows"]) == (200, 143)
    assert (customers["missing"], customers["added"], customers["changed"]) == (1, 4, 10)
    assert customers["changed_columns"] == {"name": 10}
    assert (events["missing"], events["added"], events["changed"]) == (2, 1, None)
    assert events["compared_by"] == "whole-row hash"
    assert sorted(r["msg"] for r in events["samples"]["missing"]) == ["event 1", "event 2"]
    assert any("no primary key" in note for note in events["notes"])
    assert report["totals"] == {"missing": 63, "added": 8, "changed": 10}
    sample = orders["samples"]["missing"][0]
    assert sample["id"] == 1 and sample["note"] == "order 1" and sample["customer_id"] == 2
    assert [r["note"] for r in orders["samples"]["added"]] == ["new a", "new b", "new c"]
    change = customers["samples"]["changed"][0]
    assert change["key"] == {"id": 10}
    assert change["columns"] == {"name": {"snapshot": "customer 10", "live": "renamed"}}

    text = cli("db", "diff", "latest", "--source", "db", "--table", "orders")
    assert "orders: 60 missing, 3 added, 0 changed" in text and "customers" not in text

    # refused without --yes, and nothing written
    refused = run_cli(*plan, "db", "recover", "latest", "--source", "db", env=db.env)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert db.scalar("SELECT count(*) FROM orders") == 143

    # a dry run prints the SQL and the counts, writes nothing, takes no evidence
    dry = cli("db", "recover", "latest", "--source", "db", "--dry-run")
    assert "60 row(s) to insert" in dry and "1 conflict(s)" in dry
    assert "CONFLICT" in dry and "c99@x.test" in dry
    assert "INSERT INTO" in dry or "COPY" in dry
    assert db.scalar("SELECT count(*) FROM orders") == 143
    assert _evidence(snapshots()) == {incident_evidence}

    # the conflict blocks everything
    blocked = run_cli(*plan, "db", "recover", "latest", "--source", "db", "--yes", env=db.env)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "conflict" in blocked.stderr and "--skip-conflicts" in blocked.stderr
    assert db.scalar("SELECT count(*) FROM orders") == 143

    # recover the rest; changed rows stay as they are
    done = json.loads(
        cli(
            "db",
            "recover",
            "latest",
            "--source",
            "db",
            "--yes",
            "--skip-conflicts",
            "--json",
            code=3,
        )
    )
    assert done["written"] and done["inserted"] == 62 and done["updated"] == 0
    assert done["evidence"]["name"].startswith("shop-prod-")
    after_missing = {k.rsplit(".", 1)[-1]: v for k, v in done["after"]["missing"].items()}
    assert after_missing == {"customers": 1, "events": 0, "orders": 0}
    assert db.scalar("SELECT count(*) FROM orders") == 203
    assert db.scalar("SELECT count(*) FROM orders WHERE note LIKE 'new %'") == 3
    assert db.scalar("SELECT count(*) FROM customers WHERE name = 'renamed'") == 10
    assert db.scalar("SELECT count(*) FROM events") == 51
    assert db.scalar("SELECT name FROM customers WHERE id = 500") == "taken"
    assert _evidence(snapshots()) == {incident_evidence, done["evidence"]["id"]}
    # foreign-key order: customers before orders
    steps = [s["table"].rsplit(".", 1)[-1] for s in done["steps"]]
    assert steps.index("customers") < steps.index("orders")
    # the app keeps working: a new order gets a fresh id
    db.execute("INSERT INTO orders (customer_id, amount, note) VALUES (3, 9.00, 'after')")
    assert db.scalar("SELECT max(id) FROM orders") > 203

    after = _tables(json.loads(cli("db", "diff", "latest", "--source", "db", "--json")))
    assert after["orders"]["missing"] == 0 and after["orders"]["added"] == 4
    assert after["events"]["missing"] == 0
    assert after["customers"]["changed"] == 10

    # the old values of the changed rows, on request
    restored = json.loads(
        cli(
            "db",
            "recover",
            "latest",
            "--source",
            "db",
            "--table",
            "customers",
            "--changed",
            "restore",
            "--yes",
            "--skip-conflicts",
            "--json",
            code=3,
        )
    )
    assert restored["updated"] == 10 and restored["inserted"] == 0
    assert db.scalar("SELECT count(*) FROM customers WHERE name = 'renamed'") == 0
    assert db.scalar("SELECT name FROM customers WHERE id = 10") == "customer 10"

    # table-level restore into a new database: the two tables as they were in the snapshot
    out = cli(
        "restore",
        "latest",
        "--source",
        "db",
        "--table",
        "orders",
        "--table",
        "customers",
        "--into",
        db.table_target,
    )
    assert "orders: 200 rows (matches backup)" in out
    assert "customers: 100 rows (matches backup)" in out
    assert db.target_scalar is not None
    assert db.target_scalar("SELECT count(*) FROM orders") == 200
    assert db.target_scalar("SELECT count(*) FROM orders WHERE note = 'order 1'") == 1
    again = run_cli(
        *plan,
        "restore",
        "latest",
        "--source",
        "db",
        "--table",
        "orders",
        "--into",
        db.table_target,
        env=db.env,
    )
    assert again.returncode == 1 and "already has table" in again.stderr
    unknown = run_cli(
        *plan,
        "restore",
        "latest",
        "--source",
        "db",
        "--table",
        "nope",
        "--into",
        db.table_target + "x",
        env=db.env,
    )
    assert unknown.returncode == 1 and "no table nope" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    live_url = db.env.get("SHOP_DB_URL", db.source.split('"')[1])
    refused = run_cli(
        *plan,
        "restore",
        "latest",
        "--source",
        "db",
        "--table",
        "orders",
        "--into",
        live_url,
        env=db.env,
    )
    assert refused.returncode == 1 and "production" in refused.stderr
    assert "--to-production --yes" in refused.stderr
    dry_table = cli("restore", "latest", "--source", "db", "--table", "orders", "--into",
                    db.table_target + "_dry", "--dry-run")  # fmt: skip
    assert "restore plan: table(s) orders of source db" in dry_table
    assert "dry run: nothing was restored" in dry_table
    dry_refused = run_cli(*plan, "restore", "latest", "--source", "db", "--table", "orders",
                          "--into", live_url, "--dry-run", env=db.env)  # fmt: skip
    assert dry_refused.returncode == 1 and "REFUSED" in dry_refused.stdout

    # the uploads: only the missing ones back; the overwritten and the new one stay
    cli("restore", "latest", "--source", "uploads", "--into", str(uploads), "--only-missing")
    assert (uploads / "u1.png").read_bytes() == bytes([1]) * 3000
    assert (uploads / "u3.png").exists()
    assert (uploads / "u4.png").read_bytes() == b"overwritten by the deploy"
    assert (uploads / "fresh.png").exists()

    # a table the deploy dropped: back into production on purpose, evidence first
    db.execute("DROP TABLE events")
    back = cli("restore", "latest", "--source", "db", "--table", "events", "--into", live_url,
               "--to-production", "--yes")  # fmt: skip
    assert "events: 50 rows (matches backup)" in back and "evidence snapshot" in back
    assert db.scalar("SELECT count(*) FROM events") == 50

    # what ran is in the incident's timeline, with what it did
    status = json.loads(cli("incident", "status", "--json"))
    events = {e["what"].split(" db ", 1)[-1]: e for e in status["timeline"]}
    recovered = next(e for w, e in events.items() if w.startswith("recover latest") and
                     "--skip-conflicts --json" in w and "--table" not in w)  # fmt: skip
    assert recovered["exit_code"] == 3
    assert "db recover db: 62 row(s) inserted, 0 updated" in recovered["details"]
    assert f"evidence snapshot {done['evidence']['name']}" in recovered["details"]
    cli("incident", "end")
    assert not (app / "frozen.marker").exists()

    # `latest` is still the complete daily backup, and the next drill passes on it
    dry_latest = json.loads(cli("restore", "latest", "--source", "uploads", "--into",
                                str(tmp_path / "elsewhere"), "--dry-run", "--json"))  # fmt: skip
    assert dry_latest["snapshot"]["id"] == daily["id"]
    drilled = json.loads(cli("drill", "--json"))
    assert drilled["passed"] is True, drilled["reasons"]
    assert drilled["snapshot_id"] == daily["id"]

    # the evidence is held: the next daily backup and forget --prune (keep_last = 1) leave it
    held = _evidence(snapshots())
    assert len(held) == 4  # incident start, db recover, --changed restore, restore --table
    cli("backup", "--reason", "daily")
    cli("forget", "--prune", "--force")
    left = snapshots()
    assert _evidence(left) == held
    assert [s["reason"] for s in left if s["id"] not in held] == ["daily"]
    assert daily["id"] not in {s["id"] for s in left}  # retention did run

    # the runbook's incident page lists the incident and the commands that were run
    cli("runbook")
    runbook = (app / "RUNBOOK.md").read_text()
    assert "orders gone" in runbook
    assert "db recover latest --source db --yes --skip-conflicts" in runbook
    assert "restore latest --source uploads --into" in runbook and "--only-missing" in runbook
    if db.secret:
        assert db.secret not in runbook


def test_db_diff_and_recover_sqlite(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "shop" / "app.sqlite3"
    path.parent.mkdir(parents=True)

    def execute(statement: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(statement)

    def scalar(query: str) -> Any:
        with sqlite3.connect(path) as conn:
            return conn.execute(query).fetchone()[0]

    target = tmp_path / "tables.sqlite3"

    def target_scalar(query: str) -> Any:
        with sqlite3.connect(target) as conn:
            return conn.execute(query).fetchone()[0]

    _scenario(
        tmp_path,
        run_cli,
        Db(
            "sqlite",
            f'path = "{path}"',
            {},
            execute,
            scalar,
            table_target=str(target),
            target_scalar=target_scalar,
        ),
    )


def test_db_diff_and_recover_postgres(
    tmp_path: Path, run_cli: RunCli, postgres_server: Any
) -> None:
    server = postgres_server
    server.create_database("dbdiff_shop")

    def scalar(query: str) -> Any:
        with server.connect("dbdiff_shop") as conn:
            row = conn.execute(query).fetchone()
            return row[0]

    def execute(statement: str) -> None:
        with server.connect("dbdiff_shop") as conn:
            conn.execute(statement)

    def target_scalar(query: str) -> Any:
        with server.connect("dbdiff_tables") as conn:
            return conn.execute(query).fetchone()[0]

    url = server.url("dbdiff_shop")
    db = Db("postgres", 'url = "${SHOP_DB_URL}"', {"SHOP_DB_URL": url}, execute, scalar,
            secret=server.password, table_target=server.url("dbdiff_tables"),
            target_scalar=target_scalar)  # fmt: skip
    try:
        _scenario(tmp_path, run_cli, db)
    finally:
        server.drop_database("dbdiff_shop")
        server.drop_database("dbdiff_tables")


def test_db_diff_and_recover_mariadb(tmp_path: Path, run_cli: RunCli, mariadb_server: Any) -> None:
    server = mariadb_server
    server.create_database("dbdiff_shop")

    def scalar(query: str) -> Any:
        conn = server.connect("dbdiff_shop")
        try:
            with conn.cursor() as cursor:
                cursor.execute(query)
                return cursor.fetchone()[0]
        finally:
            conn.close()

    def execute(statement: str) -> None:
        conn = server.connect("dbdiff_shop")
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()

    def target_scalar(query: str) -> Any:
        conn = server.connect("dbdiff_tables")
        try:
            with conn.cursor() as cursor:
                cursor.execute(query)
                return cursor.fetchone()[0]
        finally:
            conn.close()

    url = server.url("dbdiff_shop")
    db = Db("mysql", 'url = "${SHOP_DB_URL}"', {"SHOP_DB_URL": url}, execute, scalar,
            secret=server.password, table_target=server.url("dbdiff_tables"),
            target_scalar=target_scalar)  # fmt: skip
    try:
        _scenario(tmp_path, run_cli, db)
    finally:
        server.drop_database("dbdiff_shop")
        server.drop_database("dbdiff_tables")
