"""A drill starts its throwaway server while the repository opens and restores the database
on a thread while the uploads restore: the record stays in the plan's order, progress is one
report for both, and every way out (a fetch that fails, Ctrl-C in the middle) still tears
the server and the folders down."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safehold.drills.runner import FILES_BESIDE_DATABASES_NICE, DrillRequest, drill_plan
from safehold.plan.loader import load_plan
from safehold.repo.progress import Progress
from safehold.sources.postgres import PostgresSource
from tests.conftest import TEST_PASSWORD, RunCli
from tests.drills.test_drill_databases import _app, _cli, _fill_postgres, _ok


def _processes_under(folder: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if str(folder) in line]


@pytest.fixture
def backed_up(tmp_path: Path, run_cli: RunCli, postgres_server: Any) -> Iterator[dict[str, Any]]:
    """A shop (postgres + uploads) backed up once; the environment to drill it in-process."""
    db = f"shop_{secrets.token_hex(3)}"
    _fill_postgres(postgres_server, db)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    app = _app(tmp_path, "postgres")
    env = {"APP_DB_URL": postgres_server.url(db), "SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    try:
        _ok(_cli(run_cli, app, env, "init"))
        _ok(_cli(run_cli, app, env, "backup"), postgres_server.password)
        environ = {"APP_DB_URL": postgres_server.url(db), "SAFEHOLD_PASSWORD": TEST_PASSWORD}
        plan = load_plan(app / "safehold.toml", cwd=app, environ=environ)
        yield {"plan": plan, "environ": environ, "scratch": scratch}
    finally:
        postgres_server.drop_database(db)


@pytest.fixture
def temp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp dir of its own for the drill (the dump's temp file, a server folder outside
    the scratch root), that the `postgres` account can reach."""
    folder = Path(tempfile.mkdtemp(prefix="safehold-test-", dir="/tmp"))
    folder.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    monkeypatch.undo()
    shutil.rmtree(folder, ignore_errors=True)


def _left_behind(scratch: Path, temp: Path) -> list[str]:
    left = [str(p) for p in scratch.iterdir()] + _processes_under(scratch)
    return left + [str(p) for p in temp.glob("safehold-*")]


def test_a_drill_restores_the_database_beside_the_uploads(
    backed_up: dict[str, Any], temp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged: list[list[Path]] = []
    original = PostgresSource.staged

    @contextmanager
    def recording(self: PostgresSource, *args: Any) -> Iterator[None]:
        with original(self, *args):
            staged.append(list(temp.glob("safehold-pg-*")))
            yield

    monkeypatch.setattr(PostgresSource, "staged", recording)
    reports: list[Progress] = []
    messages: list[str] = []
    nice: dict[str, int] = {}

    def observe(message: str) -> None:
        messages.append(message)
        for name in ("db", "uploads"):
            if message.startswith(f"restoring {name}"):
                nice[name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    record = drill_plan(
        backed_up["plan"], DrillRequest(scratch_parent=str(backed_up["scratch"])),
        backed_up["environ"], observe=observe, save=False, progress=reports.append,
    )  # fmt: skip
    assert record.passed, record.reasons
    assert [p.name for p in record.phases] == [
        "fetch", "scratch", "restore:db", "restore:uploads", "checks", "teardown",
    ]  # fmt: skip
    assert "throwaway PostgreSQL" in record.phases[1].detail and record.phases[1].seconds > 0
    assert [s.name for s in record.sources] == ["db", "uploads"]
    assert all(s.ok for s in record.sources)
    assert "public.orders: 500 rows (matches backup)" in record.sources[0].summary
    # the server started before the repository was even open
    assert messages[0].startswith("starting a throwaway PostgreSQL"), messages
    # and the dump was read out of the repository while it started
    assert len(staged) == 1 and len(staged[0]) == 1, staged
    # one progress for the restores side by side: all their bytes, of both totals
    restoring = [r for r in reports if r.phase == "restore"]
    assert restoring and {r.source for r in restoring} == {"db, uploads"}
    last = restoring[-1]
    assert last.total is not None and last.done == last.total > 15000  # the dump, 3 uploads
    assert [r.done for r in restoring] == sorted(r.done for r in restoring)
    # the uploads gave way to the database: their thread ran at a lower CPU priority
    assert nice["uploads"] == nice["db"] + FILES_BESIDE_DATABASES_NICE, nice
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == nice["db"]
    assert _left_behind(backed_up["scratch"], temp) == []


def test_a_fetch_that_fails_still_tears_down_the_server_it_started(
    backed_up: dict[str, Any], tmp_path: Path
) -> None:
    environ = {**backed_up["environ"], "SAFEHOLD_PASSWORD": "not the password"}
    messages: list[str] = []
    with pytest.raises(Exception, match="password"):
        drill_plan(backed_up["plan"], DrillRequest(scratch_parent=str(backed_up["scratch"])),
                   environ, observe=messages.append, save=False)  # fmt: skip
    assert any(m.startswith("starting a throwaway PostgreSQL") for m in messages)
    assert _left_behind(backed_up["scratch"], tmp_path / "nothing") == []


def test_ctrl_c_while_the_uploads_restore_stops_the_database_restore_too(
    backed_up: dict[str, Any], temp: Path
) -> None:
    messages: list[str] = []

    def observe(message: str) -> None:
        messages.append(message)
        if message.startswith("restoring uploads"):  # the database restores meanwhile
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drill_plan(backed_up["plan"], DrillRequest(scratch_parent=str(backed_up["scratch"])),
                   backed_up["environ"], observe=observe, save=False)  # fmt: skip
    assert any(m.startswith("restoring db") for m in messages), messages
    assert _left_behind(backed_up["scratch"], temp) == []
