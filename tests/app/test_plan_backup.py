"""One snapshot for many sources; a failing source does not stop the others; restores go to
new places and are verified against the manifest recorded at backup time."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from safehold.app.plan_backup import run_plan_backup
from safehold.app.restore import find_plan_snapshot, restore_source
from safehold.backends import LocalBackend
from safehold.errors import SafeholdError, UsageError
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.sources.base import Source
from safehold.sources.command import CommandSource
from safehold.sources.files import FilesSource
from safehold.sources.sqlite import SqliteSource


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(1024, 8, 1))


def _make_app(root: Path) -> tuple[Path, Path]:
    uploads = root / "uploads"
    (uploads / "2026").mkdir(parents=True)
    (uploads / "2026" / "avatar.png").write_bytes(bytes(range(256)) * 100)
    (uploads / "notes.txt").write_text("hello\n")
    (uploads / "scratch.tmp").write_text("skip me")
    database = root / "app.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        connection.executemany(
            "INSERT INTO users (email) VALUES (?)", [(f"u{i}@example.com",) for i in range(500)]
        )
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    return uploads, database


def test_all_sources_land_in_one_named_snapshot_and_restore_to_new_places(
    repo: Repository, tmp_path: Path
) -> None:
    uploads, database = _make_app(tmp_path / "app")
    sources: list[Source] = [
        SqliteSource("db", database),
        FilesSource("uploads", [uploads], excludes=["*.tmp"]),
        CommandSource(
            "billing",
            "printf 'id,amount\\n1,9.99\\n'",
            filename="billing.csv",
            notes="card numbers cannot be exported",
        ),
    ]
    result = run_plan_backup(
        repo, sources, app="myapp", env="prod", reason="predeploy", note="auth fix"
    )
    assert result.failed == []
    snapshot = result.snapshot
    assert snapshot.name is not None and snapshot.name.startswith("myapp-prod-")
    assert snapshot.name.endswith("-predeploy-auth-fix")
    assert snapshot.complete
    manifests = snapshot.safehold["sources"]
    assert manifests["db"]["tables"] == {"orders": 0, "users": 500}
    assert manifests["billing"]["notes"] == "card numbers cannot be exported"
    assert find_plan_snapshot(repo, "latest", app="myapp", env="prod").id == snapshot.id

    restored_db = tmp_path / "restored" / "app.sqlite3"
    report = restore_source(repo, snapshot, sources[0], str(restored_db))
    assert report.details["verified"] is True
    with sqlite3.connect(restored_db) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone()[0] == 500

    restored_files = tmp_path / "restored-uploads"
    restore_source(repo, snapshot, sources[1], str(restored_files))
    assert (restored_files / "uploads" / "2026" / "avatar.png").read_bytes() == (
        uploads / "2026" / "avatar.png"
    ).read_bytes()
    assert not (restored_files / "uploads" / "scratch.tmp").exists()

    restored_csv = tmp_path / "billing.csv"
    report = restore_source(repo, snapshot, sources[2], str(restored_csv))
    assert restored_csv.read_text() == "id,amount\n1,9.99\n"
    assert report.details["verified"] is True


def test_a_failing_source_is_recorded_and_the_others_are_saved(
    repo: Repository, tmp_path: Path
) -> None:
    uploads, _ = _make_app(tmp_path / "app")
    secret = "hunter2-very-secret"
    sources: list[Source] = [
        FilesSource("uploads", [uploads]),
        CommandSource(
            "crm",
            f"echo 'token {secret} rejected' >&2; exit 7",
            redact=lambda text: text.replace(secret, "***"),
        ),
        SqliteSource("db", tmp_path / "missing.sqlite3"),
    ]
    result = run_plan_backup(
        repo,
        sources,
        app="myapp",
        env="prod",
        reason="daily",
        redact=lambda text: text.replace(secret, "***"),
    )
    failed = {outcome.name: outcome.error for outcome in result.failed}
    assert set(failed) == {"crm", "db"}
    assert "exited with status 7" in (failed["crm"] or "")
    assert "missing.sqlite3" in (failed["db"] or "")
    assert not result.snapshot.complete
    assert result.snapshot.safehold["failed_sources"] == ["crm", "db"]
    assert secret not in result.snapshot.encode().decode()
    restore_source(repo, result.snapshot, sources[0], str(tmp_path / "r"))
    assert (tmp_path / "r" / "uploads" / "notes.txt").read_text() == "hello\n"
    with pytest.raises(UsageError, match="failed in snapshot"):
        restore_source(repo, result.snapshot, sources[1], str(tmp_path / "crm.out"))


def test_sqlite_backup_is_consistent_while_the_app_writes(repo: Repository, tmp_path: Path) -> None:
    database = tmp_path / "busy.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT)")
    stop = threading.Event()

    def writer() -> None:
        connection = sqlite3.connect(database, timeout=30)
        while not stop.is_set():
            with connection:
                connection.execute("INSERT INTO events (payload) VALUES (?)", ("x" * 200,))
        connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = run_plan_backup(
            repo, [SqliteSource("db", database)], app="a", env="e", reason="manual"
        )
    finally:
        stop.set()
        thread.join()
    counted = result.snapshot.safehold["sources"]["db"]["tables"]["events"]
    restored = tmp_path / "restored.sqlite3"
    report = restore_source(repo, result.snapshot, SqliteSource("db", database), str(restored))
    assert report.details["verified"] is True
    with sqlite3.connect(restored) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone()[0] == counted
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_restores_refuse_to_overwrite(repo: Repository, tmp_path: Path) -> None:
    _, database = _make_app(tmp_path / "app")
    source = SqliteSource("db", database)
    result = run_plan_backup(repo, [source], app="a", env="e", reason="manual")
    assert source.is_production_target(str(database))
    assert not source.is_production_target(str(tmp_path / "new.sqlite3"))
    with pytest.raises(SafeholdError, match="already exists"):
        restore_source(repo, result.snapshot, source, str(database))


def test_a_command_that_times_out_fails_its_source(repo: Repository, tmp_path: Path) -> None:
    source = CommandSource("slow", "sleep 5", timeout=0.5)
    result = run_plan_backup(repo, [source], app="a", env="e", reason="manual")
    assert [outcome.name for outcome in result.failed] == ["slow"]
    assert "timed out" in (result.failed[0].error or "")
