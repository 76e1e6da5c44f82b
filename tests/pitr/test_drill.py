"""A drill of a `pitr = "wal"` source also recovers it to a moment and reports the RPO reached;
the record keeps it."""

from __future__ import annotations

import json
import time

from tests.pitr.conftest import PitrSite


def test_drill_recovers_to_a_moment_and_measures_the_rpo(pitr_site: PitrSite) -> None:
    site = pitr_site
    plan = site.plan.read_text() + '\n[drill]\npitr_at = "-1s"\n'
    site.plan.write_text(plan)
    site.sql("CREATE TABLE orders (id serial PRIMARY KEY, created_at timestamptz NOT NULL "
             "DEFAULT clock_timestamp())")  # fmt: skip
    site.sql("INSERT INTO orders DEFAULT VALUES")
    site.ok("backup")
    site.ok("pitr", "basebackup")
    for _ in range(3):
        site.sql("INSERT INTO orders DEFAULT VALUES")
    newest = site.sql("SELECT max(created_at) FROM orders")
    site.switch_and_wait()
    time.sleep(2)

    result = site.cli("drill", "--json", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(result.stdout)
    [pitr] = record["pitr"]
    assert pitr["source"] == "db" and pitr["ok"] is True
    assert pitr["newest"] == "shop.orders.created_at"
    assert 0 <= pitr["rpo_measured_s"] <= 60
    assert pitr["base_backup"].startswith("shop-prod-")
    [check] = [c for c in record["checks"] if c["kind"] == "pitr"]
    assert check["ok"] and "newest row shop.orders.created_at" in check["detail"]
    assert newest[:19].replace(" ", "T") in check["detail"]
    assert any(phase["name"] == "pitr:db" for phase in record["phases"])

    runbook = site.app / "RUNBOOK.md"
    site.ok("runbook", "-o", str(runbook))
    text = runbook.read_text()
    assert "point-in-time RPO reached (db, base backup shop-prod-" in text
    assert "9. Bad data a moment ago: restore to just before it happened" in text
    assert 'safehold restore latest --source db --at "YYYY-MM-DD HH:MM:SS+00"' in text
