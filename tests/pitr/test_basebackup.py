"""Base backups: pg_basebackup streamed into a snapshot named like the others, deduplicated
from one to the next, and the recoverable window it opens in `wal status`."""

from __future__ import annotations

import json
import re

from tests.pitr.conftest import PitrSite


def test_basebackup_is_a_named_snapshot_and_opens_a_window(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)")
    site.sql("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    first = json.loads(site.ok("pitr", "basebackup", "--json"))
    assert re.fullmatch(r"shop-prod-\d{4}-\d\d-\d\d-basebackup", first["name"])
    assert first["timeline"] == 1 and first["source"] == "db"
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", first["start_lsn"])
    assert first["segment_size"] == 1024 * 1024
    site.switch_and_wait()

    status = json.loads(site.ok("wal", "status", "--json"))
    [window] = status["windows"]
    assert window["base_backup"] == first["snapshot_id"]
    assert window["from"] <= window["to"]
    assert status["problems"] == []

    # a week later, nearly nothing changed: the second base backup adds little
    site.sql("UPDATE orders SET note = 'changed' WHERE id <= 10")
    second = json.loads(site.ok("pitr", "basebackup", "--json"))
    assert second["name"] != first["name"]  # unique names on one day
    assert second["bytes_added"] < second["bytes_total"] / 2, (
        second["bytes_added"],
        second["bytes_total"],
    )
    listed = json.loads(site.ok("snapshots", "--json"))
    assert {s["id"] for s in listed} == {first["snapshot_id"], second["snapshot_id"]}

    text = site.ok("wal", "status")
    assert "recoverable:" in text and "base backup shop-prod-" in text
