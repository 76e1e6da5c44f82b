"""The WAL chain you can trust: a deleted segment is a gap `wal status` reports, and
retention keeps exactly the segments the kept base backups need."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from safehold.pitr.store import WAL_NAMES, WalArchive
from safehold.repo.format import FileType
from tests.pitr.conftest import PitrSite, open_repo


def _fill(site: PitrSite, segments: int) -> list[str]:
    names = []
    for _ in range(segments):
        site.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
        names.append(site.switch_and_wait())
    return names


def test_a_deleted_segment_is_a_gap(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE t (id int, note text)")
    site.ok("pitr", "basebackup")
    names = _fill(site, 4)
    clean = site.cli("wal", "status", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["problems"] == []
    status = json.loads(site.cli("status", "--json").stdout)
    [item] = [i for i in status["items"] if i["key"] == "pitr:db"]
    assert item["level"] == "pass" and "window " in item["detail"], item
    metrics = site.ok("metrics")
    assert 'safehold_wal_gaps{app="shop",env="prod",source="db"} 0' in metrics
    assert "safehold_wal_archive_lag_seconds{" in metrics
    assert "safehold_pitr_window_end_timestamp_seconds{" in metrics
    watch = json.loads(site.cli("watch", "--json", "--no-alerts").stdout)
    [finding] = [f for f in watch["findings"] if f["key"] == "wal:db"]
    assert finding["ok"] is True, finding

    repo = open_repo(site)
    victim = WalArchive.load(repo).get(names[1])
    assert victim is not None
    repo.delete(FileType.SNAPSHOT, victim.snapshot_id)  # sync mode: one segment per batch

    status = site.cli("wal", "status", "--json")
    assert status.returncode == 3, status.stdout + status.stderr
    document = json.loads(status.stdout)
    [timeline] = document["timelines"]
    assert timeline["gaps"] == [
        {"timeline": 1, "first_missing": names[1], "last_missing": names[1], "count": 1}
    ]
    assert any("gap in the WAL of timeline 1" in problem for problem in document["problems"])
    watch = json.loads(site.cli("watch", "--json", "--no-alerts").stdout)
    [finding] = [f for f in watch["findings"] if f["key"] == "wal:db"]
    assert finding["ok"] is False and finding["severity"] == "error"
    assert "gap" in finding["title"] and names[1] in finding["detail"]
    status = json.loads(site.cli("status", "--json").stdout)
    [item] = [i for i in status["items"] if i["key"] == "pitr:db"]
    assert item["level"] == "fail" and "gap" in item["detail"]
    assert 'safehold_wal_gaps{app="shop",env="prod",source="db"} 1' in site.ok("metrics")
    text = site.cli("wal", "status")
    assert text.returncode == 3 and f"GAP: 1 segment(s) missing: {names[1]}" in text.stdout
    # the window of the base backup now ends before the gap
    [window] = document["windows"]
    assert window["last_segment"] < names[1]


def test_retention_keeps_the_segments_kept_base_backups_need(pitr_site: PitrSite) -> None:
    site = pitr_site
    site.sql("CREATE TABLE t (id int, note text)")
    old_wal = _fill(site, 2)
    first = json.loads(site.ok("pitr", "basebackup", "--json"))
    _fill(site, 2)
    second = json.loads(site.ok("pitr", "basebackup", "--json"))
    after = _fill(site, 2)

    # forgetting nothing: segments from before the first base backup are not needed
    plan = json.loads(site.ok("forget", "--keep-last", "10", "--dry-run", "--json"))
    assert plan["wal"]["oldest_needed"] is not None
    assert plan["wal"]["files_forgotten"] >= len(old_wal)

    # forget the first base backup: everything before the second one's start goes
    dry = site.ok("forget", first["snapshot_id"], "--force", "--dry-run")
    assert "would be forgotten" in dry
    before = WalArchive.load(open_repo(site))
    assert all(before.get(name) is not None for name in old_wal)
    site.ok("forget", first["snapshot_id"], "--force", "--prune")

    repo = open_repo(site)
    archive = WalArchive.load(repo)
    assert all(archive.get(name) is None for name in old_wal)
    assert all(archive.get(name) is not None for name in after)
    # the forgotten files' name records went with their batches; the kept ones stay
    assert all(repo.load_named_record(WAL_NAMES, name) is None for name in old_wal)
    assert all(repo.load_named_record(WAL_NAMES, name) is not None for name in after)
    status = json.loads(site.ok("wal", "status", "--json"))
    assert status["problems"] == []
    [window] = status["windows"]
    assert window["base_backup"] == second["snapshot_id"]
    # what is left still restores: the plan finds its base backup and WAL
    inside = datetime.fromtimestamp(window["to"] - 0.5, UTC).isoformat(sep=" ")
    restore = json.loads(
        site.ok("restore", "latest", "--source", "db", "--at", inside, "--into",
                site.server.url("shop_check"), "--dry-run", "--json")
    )  # fmt: skip
    assert restore["base_backup"]["snapshot_id"] == second["snapshot_id"]
    check = site.ok("check")
    assert "no errors were found" in check
