"""Snapshots that mean what they say: `latest`, the drill's choice, per-source freshness and
retention take only full backups of the whole plan; evidence and single-source snapshots never
stand in for them, and evidence snapshots are held when taken."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.app.holds import held_snapshots
from safehold.app.plan_backup import run_plan_backup
from safehold.app.restore import execute_restore, find_plan_snapshot, plan_restore
from safehold.backends import LocalBackend
from safehold.drills.runner import pick_snapshot
from safehold.errors import UsageError
from safehold.health.observe import DestinationView, Observation
from safehold.plan.loader import load_plan
from safehold.plan.models import Plan
from safehold.policy.retention import PlanScope, RetentionPolicy, apply_retention
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot, is_full_backup, is_good_backup_of
from safehold.sources.files import FilesSource
from safehold.sources.sqlite import SqliteSource

PLAN = (
    'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "15m"\n'
    '[[sources]]\nname = "uploads"\ntype = "files"\npaths = ["uploads"]\n'
    '[[sources]]\nname = "db"\ntype = "sqlite"\npath = "app.sqlite3"\n'
    '[[destinations]]\nname = "local"\nrepository = "backups"\n'
)


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Repository, Plan, FilesSource, SqliteSource]:
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.txt").write_text("hello\n")
    with sqlite3.connect(app / "app.sqlite3") as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    (app / "safehold.toml").write_text(PLAN)
    plan = load_plan(app / "safehold.toml", cwd=app, environ={})
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(1024, 8, 1))
    files = FilesSource("uploads", [app / "uploads"])
    db = SqliteSource("db", app / "app.sqlite3")
    return repo, plan, files, db


def _take(repo: Repository, sources: list[FilesSource | SqliteSource], reason: str) -> Snapshot:
    return run_plan_backup(repo, list(sources), app="shop", env="prod", reason=reason).snapshot


def test_evidence_and_single_source_snapshots_never_stand_in_for_a_full_backup(
    shop: tuple[Repository, Plan, FilesSource, SqliteSource], tmp_path: Path
) -> None:
    repo, plan, files, db = shop
    full = _take(repo, [files, db], "daily")
    # A production restore of db: its evidence snapshot (db only) is taken first, and held.
    restore = plan_restore(repo, full, db, str(db.path), app="shop", env="prod",
                           to_production=True, yes=True)  # fmt: skip
    taken: list[Snapshot] = []
    execute_restore(repo, restore, on_evidence=taken.append)
    [evidence] = taken
    assert evidence.reason == "evidence" and sorted(evidence.safehold["sources"]) == ["db"]
    assert evidence.id in held_snapshots(repo)
    assert "evidence snapshot: before restore of" in held_snapshots(repo)[evidence.id]
    partial = _take(repo, [files], "manual")  # `backup --source uploads`
    sources = [source.name for source in plan.sources]

    assert not is_full_backup(evidence, sources) and not is_full_backup(partial, sources)
    assert is_full_backup(full, sources) and not is_good_backup_of(evidence, "db")

    # latest: the newest full backup; latest --source X: the newest good backup of X.
    latest = find_plan_snapshot(repo, "latest", app="shop", env="prod", plan_sources=sources)
    assert latest.id == full.id
    by_source = {
        name: find_plan_snapshot(repo, "latest", app="shop", env="prod", source=name).id
        for name in ("uploads", "db")
    }
    assert by_source == {"uploads": partial.id, "db": full.id}
    # asked for on purpose, evidence is found
    asked = find_plan_snapshot(repo, "latest", app="shop", env="prod", source="db",
                               reason="evidence")  # fmt: skip
    assert asked.id == evidence.id

    # the drill's latest is the full backup, and it is "the newest"
    assert pick_snapshot(repo, plan, "latest") == (full, True)
    assert pick_snapshot(repo, plan, partial.id) == (partial, False)

    # per-source freshness: a partial backup of uploads counts for uploads, evidence does not
    view = DestinationView(plan.destinations[0], repo, snapshots=repo.list_snapshots())
    observation = Observation(plan, datetime.now(UTC), [view])
    assert observation.newest_good("uploads") == (partial, "local")
    assert observation.newest_good("db") == (full, "local")

    # retention: with the plan known, the newest full backup is the daily one and the
    # newest good backup of each source; the evidence is kept because it is held
    decisions = apply_retention(repo.list_snapshots(), RetentionPolicy(keep_daily=1),
                                plan=PlanScope("shop", "prod", frozenset(sources)),
                                holds=held_snapshots(repo))  # fmt: skip
    why = {decision.snapshot.id: decision.reasons for decision in decisions}
    assert "daily snapshot (1 of 1)" in why[full.id]
    assert "newest good backup of source db" in why[full.id]
    assert "newest good backup of source uploads" in why[full.id]
    assert why[evidence.id][0].startswith("held: evidence snapshot")
    assert why[partial.id] == ["newest snapshot"]


def test_latest_without_a_full_backup_says_so(
    shop: tuple[Repository, Plan, FilesSource, SqliteSource],
) -> None:
    repo, plan, files, _ = shop
    _take(repo, [files], "manual")
    sources = [source.name for source in plan.sources]
    with pytest.raises(UsageError, match="no snapshot of shop-prod holds a complete backup"):
        find_plan_snapshot(repo, "latest", app="shop", env="prod", plan_sources=sources)
    with pytest.raises(UsageError, match="no complete backup of shop-prod to drill"):
        pick_snapshot(repo, plan, "latest")
    with pytest.raises(UsageError, match="holds a good backup of 'db'"):
        find_plan_snapshot(repo, "latest", app="shop", env="prod", source="db")
