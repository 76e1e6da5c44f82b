"""The staleness watch against real repositories, with an injected clock: fresh, stale (the
backup job stopped, or the clock jumped a day), recovered, drill overdue or failed, an
unreachable destination and its return; alerts go to a real HTTP receiver."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from safehold.alerts.store import StateStore
from safehold.app.copy import copy_snapshots
from safehold.app.plan_backup import run_plan_backup
from safehold.backends import LocalBackend
from safehold.drills.record import DrillRecord, save_drill
from safehold.health.observe import destination_opener
from safehold.health.watch import WatchReport, run_watch
from safehold.ops.alerting import tracker_for
from safehold.plan.models import Plan
from safehold.repo.gotypes import GoTime
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.sources.from_plan import build_sources
from tests.ops_helpers import T0, FakeClock, make_plan
from tests.receivers import HttpReceiver

PASSWORD = "watch-test-password"
ENV = {"SAFEHOLD_PASSWORD": PASSWORD}


def at(moment: datetime) -> GoTime:
    return GoTime(int(moment.timestamp()) * 1_000_000_000, 0)


class World:
    """An app folder with a plan (local + offsite destinations), repositories and a clock."""

    def __init__(self, folder: Path, receiver: HttpReceiver) -> None:
        extra = f"""
[[alerts.channels]]
name = "hook"
url = "{receiver.url()}"
severity = "warning"
"""
        offsite = '[[destinations]]\nname = "offsite"\nrepository = "offsite"\nmax_lag = "2d"\n'
        self.plan: Plan = make_plan(folder, extra, destinations=offsite)
        self.receiver = receiver
        self.clock = FakeClock(T0)
        self.store = StateStore(folder / ".safehold")
        for name in ("repo", "offsite"):
            Repository.init(
                LocalBackend(folder / name), PASSWORD.encode(), kdf=KdfParams(1024, 8, 1)
            )
        self.folder = folder

    def repo(self, name: str, moment: datetime | None = None) -> Repository:
        clock = (lambda: at(moment)) if moment is not None else (lambda: at(self.clock.now))
        return Repository.open(LocalBackend(self.folder / name), PASSWORD.encode(), clock=clock)

    def backup(self, copy: bool = True) -> None:
        repo = self.repo("repo")
        run_plan_backup(repo, build_sources(self.plan), app="shop", env="prod", reason="daily")
        if copy:
            copy_snapshots(repo, self.repo("offsite"))

    def drill(self, passed: bool = True, reasons: list[str] | None = None) -> None:
        now = self.clock.now
        record = DrillRecord(
            started=now - timedelta(minutes=3), finished=now, passed=passed,
            snapshot_id="ab" * 32, snapshot_name="shop-prod-daily", snapshot_time=now,
            app="shop", env="prod", destination="local", host="test", reasons=reasons or [],
        )  # fmt: skip
        save_drill(self.repo("repo"), record)

    def watch(self) -> WatchReport:
        tracker = tracker_for(self.plan, self.store, self.clock)
        return run_watch(
            self.plan, now=self.clock.now, open_repo=destination_opener(self.plan, ENV),
            tracker=tracker,
        )  # fmt: skip

    def titles(self) -> list[str]:
        return sorted(request.json()["title"] for request in self.receiver.drain())


@pytest.fixture
def world(tmp_path: Path, http_receiver: HttpReceiver) -> World:
    return World(tmp_path / "app", http_receiver)


def problems(report: WatchReport) -> dict[str, str]:
    return {finding.key: finding.severity for finding in report.problems}


def test_fresh_then_stale_then_resolved(world: World) -> None:
    world.backup()
    world.drill()
    world.clock.advance(timedelta(hours=1))
    report = world.watch()
    assert problems(report) == {}, report.to_json()
    assert {f.key for f in report.findings} == {
        "reach:local", "reach:offsite", "stale:uploads", "lag:offsite", "drill",
    }  # fmt: skip
    assert world.titles() == []

    # The backup job stops (removed, or the machine's clock jumps a day): no error is sent by
    # any job, but the watch sees the newest good backup is older than the RPO.
    world.clock.advance(timedelta(hours=24))
    report = world.watch()
    assert problems(report) == {"stale:uploads": "error"}
    stale = next(f for f in report.problems)
    assert stale.detail.startswith("newest good backup 25h ago (shop-prod-")
    assert "safehold backup" in stale.fix
    assert world.titles() == ["shop-prod: source uploads has no good backup within its RPO (1d)"]

    world.clock.advance(timedelta(minutes=15))  # the next watch: still stale, no repeat
    assert problems(world.watch()) == {"stale:uploads": "error"}
    assert world.titles() == []

    world.clock.advance(timedelta(minutes=10))
    world.backup()  # the next good backup
    world.clock.advance(timedelta(minutes=5))
    report = world.watch()
    assert problems(report) == {}
    assert world.titles() == [
        "shop-prod: resolved: source uploads has no good backup within its RPO (1d)"
    ]
    assert world.store.read("problems") == {}


def test_drill_overdue_and_failed(world: World) -> None:
    world.drill()
    world.clock.advance(timedelta(days=32))
    world.backup()
    report = world.watch()
    assert problems(report) == {"drill": "warning"}
    finding = report.problems[0]
    assert "overdue" in finding.title and "safehold drill" in finding.fix
    world.receiver.drain()
    world.drill(passed=False, reasons=["row counts of db differ: users 500 != 498"])
    report = world.watch()
    # the drill job's own key: a failure its job already alerted about is not sent twice
    assert problems(report) == {"job:drill": "error"}
    assert "users 500 != 498" in report.problems[0].detail
    # no drill has passed within the interval yet: "overdue" stays open, unresolved
    assert world.titles() == ["shop-prod: the newest restore drill FAILED"]
    world.clock.advance(timedelta(minutes=15))
    assert problems(world.watch()) == {"job:drill": "error"}
    assert world.titles() == []  # rate-limited
    world.clock.advance(timedelta(hours=2))
    world.drill(passed=True)
    assert problems(world.watch()) == {}
    assert world.titles() == [
        # the watch saw the passing drill; only the drill job itself says "recovered"
        "shop-prod: resolved: restore drill overdue (interval 31d)",
        "shop-prod: resolved: the newest restore drill FAILED",
    ]


def test_no_drill_and_no_backup_yet(world: World) -> None:
    report = world.watch()
    assert problems(report) == {"stale:uploads": "error", "lag:offsite": "warning",
                                "drill": "warning"}  # fmt: skip


def test_unreachable_destination_and_its_return(world: World) -> None:
    world.backup()
    world.drill()
    offsite = world.folder / "offsite"
    moved = world.folder / "offsite-away"
    shutil.move(offsite, moved)
    report = world.watch()
    assert problems(report) == {"reach:offsite": "error"}
    assert not any(f.key == "lag:offsite" for f in report.findings)  # not measurable
    assert world.titles() == ["shop-prod: destination offsite cannot be reached"]
    shutil.move(moved, offsite)
    world.clock.advance(timedelta(minutes=15))
    report = world.watch()
    assert problems(report) == {}
    assert world.titles() == ["shop-prod: resolved: destination offsite cannot be reached"]


def test_copies_lagging_behind(world: World) -> None:
    world.backup()
    world.drill()
    for _ in range(3):  # three days of backups that never reach the offsite destination
        world.clock.advance(timedelta(days=1))
        world.backup(copy=False)
    report = world.watch()
    assert problems(report) == {"lag:offsite": "warning"}
    assert "3d" in report.problems[0].detail


def test_metrics_come_from_the_same_observation(world: World) -> None:
    world.backup()
    world.drill()
    text = world.watch().metrics_text
    assert 'safehold_destination_up{app="shop",env="prod",destination="offsite"} 1' in text
    labels = 'app="shop",env="prod",source="uploads"'
    stamp = int(T0.timestamp())
    assert f"safehold_source_last_success_timestamp_seconds{{{labels}}} {stamp}" in text
    assert 'safehold_drill_passed{app="shop",env="prod"} 1' in text
    assert 'safehold_rto_target_seconds{app="shop",env="prod"} 3600' in text
