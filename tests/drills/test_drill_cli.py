"""`safehold drill` end to end on a SQLite + uploads app (the demo's shape): it passes with
every kind of plan check, records itself, and fails loudly when the backup is not what it
should be — a missed uploads folder, a failing smoke command, an RTO that is not met — and in
every case leaves no scratch folder or process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD, RunCli

SMOKE = """
import os, sqlite3, sys
url = os.environ["DATABASE_URL"]
assert url.startswith("sqlite:///"), url
db = sqlite3.connect(url[len("sqlite:///"):])
(count,) = db.execute("SELECT count(*) FROM users").fetchone()
uploads = os.environ["UPLOADS_DIR"]
assert os.path.isfile(os.path.join(uploads, "avatars", "u1.png")), os.listdir(uploads)
assert os.environ["SAFEHOLD_DRILL"] == "1"
print("users:", count)
sys.exit(0 if count == 3 else 1)
"""


def make_app(root: Path, *, checks: str = "", rto: str = "15m", exclude: str = "[]") -> Path:
    app = root / "shop"
    (app / "uploads" / "avatars").mkdir(parents=True)
    for number in (1, 2, 3):
        (app / "uploads" / "avatars" / f"u{number}.png").write_bytes(os.urandom(3000 + number))
    with sqlite3.connect(app / "app.db") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, avatar TEXT, "
                   "created_at TEXT)")  # fmt: skip
        db.executemany(
            "INSERT INTO users (email, avatar, created_at) VALUES (?, ?, datetime('now'))",
            [(f"u{n}@shop.test", f"avatars/u{n}.png") for n in (1, 2, 3)],
        )
    (app / "smoke.py").write_text(SMOKE)
    (app / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "{rto}"
[[sources]]
name = "db"
type = "sqlite"
path = "app.db"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
exclude = {exclude}
[[destinations]]
name = "local"
repository = "backups"
{checks}
"""
    )
    return app


ALL_CHECKS = f"""
[[drill.checks]]
type = "sql"
source = "db"
query = "SELECT count(*) FROM users"
min = 3
[[drill.checks]]
type = "uploads"
source = "db"
query = "SELECT avatar FROM users"
files = "uploads"
[[drill.checks]]
type = "command"
name = "smoke test"
command = "{sys.executable} smoke.py"
[[drill.checks]]
type = "http"
command = "cd \\"$UPLOADS_DIR\\" && exec {sys.executable} -m http.server --bind 127.0.0.1 $PORT"
url = "http://127.0.0.1:{{port}}/avatars/u2.png"
status = 200
timeout = "30s"
"""


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


def _run(run_cli: RunCli, app: Path, scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    return run_cli("--plan", str(app / "safehold.toml"), *args, env=env)


def _left_behind(scratch: Path) -> list[str]:
    return sorted(p.name for p in scratch.iterdir())


def test_drill_passes_with_every_check_and_is_recorded(
    tmp_path: Path, run_cli: RunCli, scratch: Path
) -> None:
    app = make_app(tmp_path, checks=ALL_CHECKS)
    assert _run(run_cli, app, scratch, "init").returncode == 0
    backup = _run(run_cli, app, scratch, "backup", "--reason", "daily")
    assert backup.returncode == 0, backup.stderr

    result = _run(run_cli, app, scratch, "drill")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "drill PASSED" in result.stdout
    for line in (
        "every source restored",
        "row counts of db match the backup",
        "files of uploads match the snapshot",
        "3 files",
        "smoke test",
        "all 3 uploads present",
        "answers 200",
        "time to restore",
        "RTO target 15m",
    ):
        assert line in output, line  # fmt: skip
    assert "newest row db/app.db users.created_at" in output
    assert TEST_PASSWORD not in output and "Traceback" not in output
    assert _left_behind(scratch) == []

    listed = _run(run_cli, app, scratch, "drills", "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert len(records) == 1
    record = records[0]
    assert record["passed"] is True and record["reasons"] == []
    assert [p["name"] for p in record["phases"]] == [
        "fetch", "scratch", "restore:db", "restore:uploads", "checks", "teardown",
    ]  # fmt: skip
    assert record["rto_measured_s"] > 0 and record["rto_target_s"] == 900
    assert record["rpo_target_s"] == 86400 and record["data_age_s"] < 3600
    commands = [s["command"] for s in record["sources"]]
    assert commands[0].startswith("safehold restore ") and "--source db --into " in commands[0]
    human = _run(run_cli, app, scratch, "drills")
    assert "pass" in human.stdout and record["id"][:8] in human.stdout


def test_drill_fails_when_the_backup_missed_the_uploads(
    tmp_path: Path, run_cli: RunCli, scratch: Path
) -> None:
    # the uploads source excludes everything by mistake: the backup "succeeds" with no files
    app = make_app(tmp_path, checks=ALL_CHECKS, exclude='["*.png"]')
    assert _run(run_cli, app, scratch, "init").returncode == 0
    assert _run(run_cli, app, scratch, "backup").returncode == 0

    result = _run(run_cli, app, scratch, "drill")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "drill FAILED" in result.stdout
    assert "3 of 3 uploads named by the database are missing from the restored files" in output
    assert "the snapshot holds no files for this source" in output
    assert _left_behind(scratch) == []


def test_drill_fails_when_a_source_is_not_in_the_snapshot(
    tmp_path: Path, run_cli: RunCli, scratch: Path
) -> None:
    app = make_app(tmp_path)
    assert _run(run_cli, app, scratch, "init").returncode == 0
    assert _run(run_cli, app, scratch, "backup", "--source", "db").returncode == 0
    # Changed on purpose: a single-source backup is no longer `latest` for a drill (only a
    # complete backup of the whole plan is), so `drill latest` says there is none ...
    latest = _run(run_cli, app, scratch, "drill", "latest")
    assert latest.returncode != 0 and "no complete backup of" in latest.stderr
    # ... and drilling that snapshot by name still fails, naming the missing source.
    [only] = json.loads(_run(run_cli, app, scratch, "snapshots", "--json").stdout)
    result = _run(run_cli, app, scratch, "drill", only["name"])
    assert result.returncode == 1
    assert "source uploads is not in snapshot" in result.stdout
    assert "the backup missed it" in result.stdout


def test_drill_fails_when_the_smoke_command_fails(
    tmp_path: Path, run_cli: RunCli, scratch: Path
) -> None:
    checks = """
[[drill.checks]]
type = "command"
name = "app boots"
command = "echo 'cannot load config: missing SECRET_KEY' >&2; exit 3"
"""
    app = make_app(tmp_path, checks=checks)
    assert _run(run_cli, app, scratch, "init").returncode == 0
    assert _run(run_cli, app, scratch, "backup").returncode == 0
    result = _run(run_cli, app, scratch, "drill", "--json")
    assert result.returncode == 1
    record = json.loads(result.stdout)
    assert record["passed"] is False
    assert record["reasons"] == [
        "check failed: app boots: exit code 3: cannot load config: missing SECRET_KEY"
    ]
    assert _left_behind(scratch) == []


def test_drill_fails_when_the_rto_is_exceeded(
    tmp_path: Path, run_cli: RunCli, scratch: Path
) -> None:
    checks = """
[[drill.checks]]
type = "command"
command = "sleep 1.2"
"""
    app = make_app(tmp_path, checks=checks, rto="1s")
    assert _run(run_cli, app, scratch, "init").returncode == 0
    assert _run(run_cli, app, scratch, "backup").returncode == 0
    result = _run(run_cli, app, scratch, "drill")
    assert result.returncode == 1
    assert "exceeds the RTO of 1.0s" in result.stdout
    assert "drill FAILED" in result.stdout


def test_drill_refuses_a_scratch_place_inside_production(tmp_path: Path, run_cli: RunCli) -> None:
    app = make_app(tmp_path)
    scratch = app / "uploads"  # a scratch folder inside the live uploads: must be refused
    assert _run(run_cli, app, scratch, "init").returncode == 0
    assert _run(run_cli, app, scratch, "backup").returncode == 0
    before = sorted(p.name for p in (app / "uploads").rglob("*"))
    result = _run(run_cli, app, scratch, "drill")
    assert result.returncode == 1
    assert "refusing to drill" in result.stderr and "production location" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (app / "uploads").rglob("*")) == before


def test_ctrl_c_during_a_drill_tears_everything_down(
    tmp_path: Path, cli_env: dict[str, str], scratch: Path
) -> None:
    # A pause of its own length, so processes of other suites on this machine are not mistaken
    # for this drill's leftovers.
    pause = f"sleep 60.{os.getpid()}{time.monotonic_ns() % 1000:03d}"
    checks = f"""
[[drill.checks]]
type = "command"
command = "touch started; {pause}"
"""
    app = make_app(tmp_path, checks=checks)
    env = {**cli_env, "SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    plan = ["--plan", str(app / "safehold.toml")]
    for args in (["init"], ["backup"]):
        subprocess.run([sys.executable, "-m", "safehold", *plan, *args], env=env, check=True,
                       capture_output=True)  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "safehold", *plan, "drill"], env=env, cwd=app,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (app / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert _left_behind(scratch) != []
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _left_behind(scratch) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert pause not in ps.stdout


def test_runbook_prints_the_commands_the_last_drill_ran(
    tmp_path: Path, run_cli: RunCli, scratch: Path
) -> None:
    app = make_app(tmp_path, checks=ALL_CHECKS)
    app_text = (
        (app / "safehold.toml")
        .read_text()
        .replace(
            "[[sources]]", '[owners]\nrestore_approvers = ["alice@shop.test"]\n\n[[sources]]', 1
        )
    )
    (app / "safehold.toml").write_text(app_text)
    assert _run(run_cli, app, scratch, "init").returncode == 0
    assert _run(run_cli, app, scratch, "backup").returncode == 0
    before = _run(run_cli, app, scratch, "runbook")
    assert before.returncode == 0 and "no drill recorded yet" in before.stderr
    assert "**No drill yet.**" in (app / "RUNBOOK.md").read_text()

    assert _run(run_cli, app, scratch, "drill").returncode == 0
    record = json.loads(_run(run_cli, app, scratch, "drills", "--json").stdout)[-1]
    result = _run(run_cli, app, scratch, "runbook")
    assert result.returncode == 0, result.stderr
    runbook = (app / "RUNBOOK.md").read_text()
    for source in record["sources"]:
        assert "The last drill ran exactly this (passed, " in runbook
        assert f"`{source['command']}`" in runbook
    assert "alice@shop.test" in runbook
    assert "safehold restore SNAPSHOT --source db --into /srv/restore/app.db" in runbook
    assert "--to-production --yes" in runbook
    assert "**PASSED**" in runbook and "| time to restore (RTO) |" in runbook
    assert "SELECT count(*) FROM users" in runbook  # the plan's checks, to verify by hand
    assert TEST_PASSWORD not in runbook
    page = (app / "RUNBOOK.html").read_text()
    assert page.startswith("<!-- safehold-runbook")
    assert "<h1>Recovery runbook: shop (prod)</h1>" in page
    printed = _run(run_cli, app, scratch, "runbook", "-o", "-")
    assert _undated(printed.stdout) == _undated(runbook)  # the minute may have turned


def _undated(runbook: str) -> str:
    """The runbook without the minute it was generated in."""
    return re.sub(r"Generated by `safehold runbook` on [0-9-]+ [0-9:]+ UTC", "Generated", runbook)
