"""The scorecard items `safehold status` takes from the schedule and alert state."""

from __future__ import annotations

from pathlib import Path

from safehold.alerts.store import StateStore
from safehold.health.ops_status import alert_items, schedule_items
from safehold.health.scorecard import Level, ScoreItem
from safehold.ops.schedule_install import install_schedule
from tests.ops_helpers import T0, make_plan

FAKE_CRONTAB = """#!/bin/sh
if [ "$1" = "-l" ]; then cat "$0.table" 2>/dev/null; exit 0; fi
cat > "$0.table"
"""


def levels(items: list[ScoreItem]) -> list[tuple[str, Level]]:
    return [(item.key, item.level) for item in items]


def test_no_schedule_table(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    items = schedule_items(plan, {}, T0)
    assert levels(items) == [("schedule", Level.FAIL)]
    assert "[schedule]" in items[0].fix


def test_schedule_not_installed_then_installed(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "[schedule]\n")
    items = schedule_items(plan, {}, T0)
    assert levels(items) == [("schedule", Level.FAIL)]
    assert items[0].fix.startswith("`safehold schedule install`")
    store = StateStore(tmp_path / ".safehold")
    install_schedule(plan, store, T0, {}, kind="systemd", unit_dir=tmp_path / "units")
    items = schedule_items(plan, {}, T0)
    assert levels(items) == [("schedule", Level.WARN)]  # written elsewhere, not enabled
    crontab = tmp_path / "crontab"
    crontab.write_text(FAKE_CRONTAB)
    crontab.chmod(0o755)
    env = {"SAFEHOLD_CRONTAB": str(crontab)}
    install_schedule(plan, store, T0, env, kind="crontab")
    assert not (tmp_path / "units").exists() or not list((tmp_path / "units").iterdir())
    items = schedule_items(plan, env, T0)
    assert levels(items) == [("schedule", Level.PASS)]
    assert items[0].detail.startswith("crontab: daily at 02:00, next ")
    crontab.with_name("crontab.table").write_text("")  # someone emptied the crontab
    assert levels(schedule_items(plan, env, T0)) == [("schedule", Level.FAIL)]


def test_backup_off_and_failed_job(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, '[schedule]\nbackup = "off"\n')
    store = StateStore(tmp_path / ".safehold")
    failure = {
        "status": "failed",
        "finished": "2026-03-01T00:10:00+00:00",
        "error": "1 snapshot(s) to remove exist in no other repository",
    }
    store.write("jobs", {"prune": failure})
    items = schedule_items(plan, {}, T0)
    assert levels(items) == [("schedule", Level.WARN), ("job-failed:prune", Level.FAIL)]
    assert "no other repository" in items[1].detail
    assert "safehold forget --prune" in items[1].fix


def test_no_alert_channels(tmp_path: Path) -> None:
    items = alert_items(make_plan(tmp_path), {}, T0)
    assert levels(items) == [("alerts", Level.WARN)]
    assert "[[alerts.channels]]" in items[0].fix
