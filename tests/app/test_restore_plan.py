"""A restore is planned, then executed: the plan says what is fetched, where it goes, whether
it is allowed and which evidence snapshot comes first; `restore --dry-run` prints it and
changes nothing; the drill is refused by the same production guard."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from safehold.app.backup import snapshot_name
from safehold.app.plan_backup import run_plan_backup
from safehold.app.restore import (
    EvidencePlan,
    RestoreItem,
    execute_file_restore,
    execute_restore,
    plan_file_restore,
    plan_restore,
)
from safehold.backends import LocalBackend
from safehold.drills.runner import DrillRequest, DrillRun
from safehold.errors import TargetNotEmptyError, UsageError
from safehold.plan.loader import load_plan
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.files import FilesSource
from safehold.sources.scratch import ScratchError
from safehold.sources.sqlite import SqliteSource
from tests.conftest import TEST_PASSWORD, RunCli

REFUSAL_HINT = (
    "restore into a new place first; to overwrite production on purpose add "
    "--to-production --yes (an evidence snapshot is taken first)"
)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(1024, 8, 1))


def _make_app(app: Path) -> tuple[Path, Path]:
    uploads = app / "uploads"
    (uploads / "2026").mkdir(parents=True)
    (uploads / "2026" / "avatar.png").write_bytes(bytes(range(256)) * 100)
    (uploads / "notes.txt").write_text("hello\n")
    database = app / "app.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        connection.executemany(
            "INSERT INTO users (email) VALUES (?)", [(f"u{i}@shop.test",) for i in range(250)]
        )
    return uploads, database


def _backup(repo: Repository, app: Path) -> tuple[Snapshot, FilesSource, SqliteSource, Path]:
    uploads, database = _make_app(app)
    files, db = FilesSource("uploads", [uploads]), SqliteSource("db", database)
    result = run_plan_backup(repo, [files, db], app="shop", env="prod", reason="daily")
    assert result.failed == []
    return result.snapshot, files, db, database


def _users(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM users").fetchone()[0])


def test_the_plan_lists_what_is_fetched_and_creates_nothing(
    repo: Repository, tmp_path: Path
) -> None:
    snapshot, files, db, _ = _backup(repo, tmp_path / "shop")
    target = tmp_path / "restored-uploads"
    plan = plan_restore(repo, snapshot, files, str(target), app="shop", env="prod")
    on_disk = [6, 256 * 100]  # notes.txt, avatar.png: small files are one blob each
    assert plan.items == (RestoreItem("/uploads/uploads", "dir", 2, sum(on_disk), 2),)
    assert (plan.total_files, plan.total_bytes, plan.total_blobs) == (2, sum(on_disk), 2)
    assert (plan.snapshot_id, plan.snapshot_name) == (snapshot.id, snapshot.name)
    assert (plan.source_name, plan.source_type, plan.target) == ("uploads", "files", str(target))
    assert plan.allowed and not plan.production and plan.evidence is None
    assert not target.exists()

    db_plan = plan_restore(repo, snapshot, db, str(tmp_path / "new.sqlite3"), app="shop",
                           env="prod")  # fmt: skip
    [item] = db_plan.items
    assert (item.path, item.type, item.files) == ("/db/app.sqlite3", "file", 1)
    assert item.bytes > 0 and item.blobs >= 1
    with pytest.raises(UsageError, match="has no source 'crm'"):
        plan_restore(repo, snapshot, FilesSource("crm", [tmp_path]), "x", app="shop", env="prod")


def test_a_production_target_is_refused_without_both_flags_and_names_its_evidence(
    repo: Repository, tmp_path: Path
) -> None:
    snapshot, _, db, database = _backup(repo, tmp_path / "shop")
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM users WHERE id > 10")  # the accident
    evidence_name = snapshot_name(
        "shop-prod", repo.clock(), "evidence", f"before restore of {snapshot.short_id}"
    )
    for to_production, yes in ((False, False), (True, False), (False, True)):
        plan = plan_restore(repo, snapshot, db, str(database), app="shop", env="prod",
                            to_production=to_production, yes=yes)  # fmt: skip
        assert plan.production and not plan.allowed
        assert plan.evidence == EvidencePlan("db", evidence_name)
        refusal = plan.refusal
        assert isinstance(refusal, UsageError) and refusal.exit_code == 1
        assert refusal.message == (
            f"refusing to restore source db into its production location {database}"
        )
        assert refusal.hint == REFUSAL_HINT
        with pytest.raises(UsageError, match="refusing to restore source db"):
            execute_restore(repo, plan)
    assert _users(database) == 10
    assert len(repo.list_snapshots()) == 1  # no evidence snapshot for a refused plan

    allowed = plan_restore(repo, snapshot, db, str(database), app="shop", env="prod",
                           to_production=True, yes=True)  # fmt: skip
    assert allowed.allowed and allowed.production and allowed.evidence is not None
    taken: list[Snapshot] = []
    report = execute_restore(repo, allowed, on_evidence=taken.append)
    assert report.details["verified"] is True
    assert _users(database) == 250
    [evidence] = taken
    assert evidence.name == allowed.evidence.name and evidence.reason == "evidence"
    assert [s.id for s in repo.list_snapshots()] == [snapshot.id, evidence.id]


def test_executing_a_plan_restores_bit_exact(repo: Repository, tmp_path: Path) -> None:
    snapshot, files, _, _ = _backup(repo, tmp_path / "shop")
    uploads = tmp_path / "shop" / "uploads"
    target = tmp_path / "restored"
    execute_restore(repo, plan_restore(repo, snapshot, files, str(target), app="shop",
                                       env="prod"))  # fmt: skip
    originals = sorted(p.relative_to(uploads) for p in uploads.rglob("*") if p.is_file())
    assert originals == sorted(
        p.relative_to(target / "uploads") for p in (target / "uploads").rglob("*") if p.is_file()
    )
    for relative in originals:
        assert (target / "uploads" / relative).read_bytes() == (uploads / relative).read_bytes()

    folder = tmp_path / "files"
    plan = plan_file_restore(repo, snapshot, str(folder), includes=("/uploads",))
    assert [item.path for item in plan.items] == ["/uploads"] and plan.total_files == 2
    assert plan.allowed and not folder.exists()
    stats = execute_file_restore(repo, plan)
    assert stats.files == 2
    avatar = folder / "uploads" / "uploads" / "2026" / "avatar.png"
    assert avatar.read_bytes() == (uploads / "2026" / "avatar.png").read_bytes()

    again = plan_file_restore(repo, snapshot, str(folder))
    assert isinstance(again.refusal, TargetNotEmptyError)
    with pytest.raises(TargetNotEmptyError, match="is not empty"):
        execute_file_restore(repo, again)
    assert plan_file_restore(repo, snapshot, str(folder), force=True).allowed


def test_a_drill_whose_scratch_target_is_production_is_refused_by_the_same_guard(
    repo: Repository, tmp_path: Path
) -> None:
    app = tmp_path / "shop"
    snapshot, files, _, _ = _backup(repo, app)
    (app / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "15m"\n'
        '[[sources]]\nname = "uploads"\ntype = "files"\npaths = ["uploads"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
    )
    plan = load_plan(app / "safehold.toml", cwd=app, environ={})
    inside = app / "uploads" / "scratch"
    guard = plan_restore(repo, snapshot, files, str(inside), app="shop", env="prod")
    assert not guard.allowed and guard.production
    before = sorted(p.name for p in (app / "uploads").rglob("*"))
    drill = DrillRun(plan, lambda: repo, DrillRequest(scratch_parent=str(app / "uploads")))
    with pytest.raises(ScratchError, match=r"refusing to drill.*production location"):
        drill.run()
    assert sorted(p.name for p in (app / "uploads").rglob("*")) == before


# ----- restore --dry-run through the real CLI ---------------------------------------------


def _cli(run_cli: RunCli, app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("--plan", str(app / "safehold.toml"), *args)
    assert "Traceback" not in result.stderr and TEST_PASSWORD not in result.stdout
    return result


def _repository_state(app: Path) -> tuple[list[str], list[str]]:
    repository = app / "backups" / "repository"
    return sorted(p.name for p in (repository / "snapshots").iterdir()), sorted(
        p.name for p in (repository / "locks").iterdir()
    )


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "shop"
    _, database = _make_app(app)
    assert _cli(run_cli, app, "init", "--yes").returncode == 0
    assert _cli(run_cli, app, "backup").returncode == 0
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM users WHERE id > 10")
    before = _repository_state(app)

    new = tmp_path / "new.sqlite3"
    shown = _cli(run_cli, app, "restore", "latest", "--source", "app", "--into", str(new),
                 "--dry-run")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "restore plan: source app (sqlite) from snapshot" in shown.stdout
    assert "fetch /app/app.sqlite3 (file): 1 file(s)" in shown.stdout
    assert "dry run: nothing was restored" in shown.stdout
    as_json = _cli(run_cli, app, "restore", "latest", "--source", "app", "--into", str(new),
                   "--dry-run", "--json")  # fmt: skip
    plan = json.loads(as_json.stdout)
    assert plan["allowed"] is True and plan["production"] is False
    assert plan["source"] == {"name": "app", "type": "sqlite"}
    assert [item["path"] for item in plan["items"]] == ["/app/app.sqlite3"]
    assert plan["total_bytes"] == plan["items"][0]["bytes"] > 0

    refused = _cli(run_cli, app, "restore", "latest", "--source", "app", "--into",
                   str(database), "--dry-run", "--json")  # fmt: skip
    real = _cli(run_cli, app, "restore", "latest", "--source", "app", "--into", str(database))
    assert refused.returncode == real.returncode == 1
    refusal = json.loads(refused.stdout)
    assert refusal["allowed"] is False and refusal["production"] is True
    assert refusal["refusal"]["message"] in real.stderr
    assert refusal["evidence"]["source"] == "app" and "-evidence-" in refusal["evidence"]["name"]
    human = _cli(run_cli, app, "restore", "latest", "--source", "app", "--into",
                 str(database), "--dry-run")  # fmt: skip
    assert human.returncode == 1 and "REFUSED: refusing to restore source app" in human.stdout

    forced = _cli(run_cli, app, "restore", "latest", "--source", "app", "--into",
                  str(database), "--to-production", "--yes", "--dry-run")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert "first: evidence snapshot of app as shop-prod-" in forced.stdout
    files = tmp_path / "files"
    listed = _cli(run_cli, app, "restore", "latest", "--target", str(files), "--dry-run")
    assert listed.returncode == 0 and "restore plan: files from snapshot" in listed.stdout

    assert _repository_state(app) == before  # no evidence snapshot, no lock left behind
    assert not new.exists() and not files.exists()
    assert _users(database) == 10
