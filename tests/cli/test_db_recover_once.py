"""`db recover` on PostgreSQL diffs once: each table is compared one time (its progress
line appears once), the check afterwards looks the missing rows up by primary key, and only
a table without a primary key is compared again; `db diff --table` restores only that
table's rows into scratch and still counts exactly, with a secondary index, a unique key, a
foreign key and a trigger in the schema (none of them built in scratch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PASSWORD, RunCli

pytestmark = pytest.mark.slow

SCHEMA = """
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text);
CREATE INDEX customers_name_idx ON customers (name);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id),
    note text, payload jsonb);
CREATE INDEX orders_note_idx ON orders (note);
CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER orders_keep BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION keep();
CREATE TABLE events (msg text, n int);
INSERT INTO customers (email, name) SELECT 'c' || g || '@x.test', 'c ' || g
    FROM generate_series(1, 40) g;
INSERT INTO orders (customer_id, note, payload)
    SELECT g % 40 + 1, 'order ' || g, jsonb_build_object('g', g) FROM generate_series(1, 500) g;
INSERT INTO events SELECT 'event ' || (g % 10), g % 10 FROM generate_series(1, 30) g;
"""


def test_recover_diffs_once(tmp_path: Path, run_cli: RunCli, postgres_server: Any) -> None:
    server = postgres_server
    server.create_database("recover_once")
    try:
        with server.connect("recover_once") as conn:
            conn.execute(SCHEMA)
        (tmp_path / "safehold.toml").write_text(
            'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1h"\nrto = "15m"\n'
            '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "${SHOP_DB_URL}"\n'
            '[[destinations]]\nname = "local"\nrepository = "backups"\n'
        )
        env = {"SHOP_DB_URL": server.url("recover_once")}
        plan = ["--plan", str(tmp_path / "safehold.toml")]

        def cli(*args: str, code: int = 0) -> tuple[str, str]:
            result = run_cli(*plan, *args, env=env)
            output = result.stdout + result.stderr
            assert result.returncode == code, output
            assert "Traceback" not in output and TEST_PASSWORD not in output
            assert server.password not in output
            return result.stdout, result.stderr

        cli("init")
        cli("backup")
        with server.connect("recover_once") as conn:
            conn.execute("DELETE FROM orders WHERE id % 5 = 0")  # 100 rows
            conn.execute("UPDATE orders SET note = 'edited' WHERE id % 7 = 0 AND id % 5 <> 0")
            conn.execute("INSERT INTO orders (customer_id, note) VALUES (1, 'new')")
            conn.execute("DELETE FROM events WHERE n = 3")  # 3 rows, no primary key

        # only the orders' rows in scratch: the counts are still exact
        out, _ = cli("db", "diff", "latest", "--source", "db", "--table", "orders", "--json")
        report = json.loads(out)
        assert [t["table"] for t in report["tables"]] == ["public.orders"]
        orders = report["tables"][0]
        assert (orders["missing"], orders["added"], orders["changed"]) == (100, 1, 57)
        assert orders["changed_columns"] == {"note": 57}
        assert (orders["snapshot_rows"], orders["live_rows"]) == (500, 401)

        out, err = cli("db", "recover", "latest", "--source", "db", "--yes")
        compared = [line.strip() for line in err.splitlines() if "comparing" in line]
        # one diff; the check compares again only the table without a primary key
        assert compared.count("comparing public.orders") == 1
        assert compared.count("comparing public.customers") == 1
        assert compared.count("comparing public.events") == 2
        assert "check: public.orders: 0 row(s) still missing" in out
        assert "check: public.events: 0 row(s) still missing" in out
        with server.connect("recover_once") as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (501,)
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (30,)
            edited = conn.execute("SELECT count(*) FROM orders WHERE note = 'edited'").fetchone()
            assert edited == (57,)  # changed rows kept as they are

        after = json.loads(cli("db", "diff", "latest", "--source", "db", "--json")[0])
        totals = {t["table"]: (t["missing"], t["added"]) for t in after["tables"]}
        assert totals == {
            "public.customers": (0, 0),
            "public.orders": (0, 1),
            "public.events": (0, 0),
        }
    finally:
        server.drop_database("recover_once")
