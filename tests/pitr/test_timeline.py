"""Timelines: the old primary is gone, a restored copy is promoted (timeline 2) and archives
into the same repository; a restore to a moment on timeline 2 replays timeline 1's WAL, the
history file, then timeline 2's."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import quote

from tests.pitr.conftest import Cluster, PitrSite
from tests.servers import free_port


def _wait_archived(cluster: Cluster, segment: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = cluster.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                            "postgres")  # fmt: skip
        if last and last[:24] >= segment:
            return
        time.sleep(0.1)
    raise AssertionError(f"{segment} was not archived: {cluster.log.read_text()[-3000:]}")


def test_restore_across_a_timeline_switch(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL)")
    site.ok("pitr", "basebackup")
    site.sql("INSERT INTO events (note) VALUES ('tl1')")
    lsn = site.sql("SELECT pg_current_wal_insert_lsn()", "postgres")
    site.switch_and_wait()
    site.server.stop()  # the primary is gone

    # the replacement: the archive restored into a data folder, promoted, archiving again
    data = site.app / "primary2"
    site.ok("restore", "latest", "--source", "db", "--before-lsn", lsn, "--into", str(data),
            timeout=600)  # fmt: skip
    with open(data / "postgresql.auto.conf", "a") as conf:
        conf.write("\narchive_mode = on\n")
    cluster = Cluster(data, free_port(), site.app / "sock2", site.app / "primary2.log")
    cluster.start()
    try:
        assert cluster.psql("SELECT timeline_id FROM pg_control_checkpoint()", "postgres") == "2"
        cluster.psql("INSERT INTO events (note) VALUES ('tl2-a')")
        time.sleep(1.0)
        target = datetime.now(UTC)
        time.sleep(1.0)
        cluster.psql("INSERT INTO events (note) VALUES ('tl2-b')")
        segment = cluster.psql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")
        _wait_archived(cluster, segment)

        status = json.loads(site.ok("wal", "status", "--json"))
        assert {t["timeline"] for t in status["timelines"]} == {1, 2}
        assert all(t["gaps"] == [] for t in status["timelines"])
        [window] = status["windows"]
        assert window["timeline"] == 2 and window["last_segment"] >= segment

        user, password = quote(site.server.user, safe=""), quote(site.server.password, safe="")
        into = f"postgresql://{user}:{password}@127.0.0.1:{cluster.port}/shop_tl"
        text = site.ok("restore", "latest", "--source", "db", "--at", target.isoformat(sep=" "),
                       "--into", into, timeout=600)  # fmt: skip
        assert "restored db" in text
        rows = cluster.psql("SELECT note FROM events ORDER BY id", "shop_tl").split()
        assert rows == ["tl1", "tl2-a"]
    finally:
        cluster.stop()
