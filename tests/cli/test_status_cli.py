"""`safehold status` through the CLI: a neglected setup is told exactly what to fix, item by
item, and exits 2; fixing the drill and the runbook turns those items green."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.cli.test_ops_cli import channel
from tests.cli.test_schedule_cli import FAKE_CRONTAB
from tests.conftest import TEST_PASSWORD, RunCli
from tests.drills.test_drill_cli import make_app
from tests.receivers import HttpReceiver
from tests.s3server import SeaweedServer


def test_status_of_a_neglected_setup(tmp_path: Path, run_cli: RunCli) -> None:
    app = make_app(tmp_path)
    text = (app / "safehold.toml").read_text().replace('rpo = "1d"', 'rpo = "1s"')
    text += "\n[retention]\nkeep_last = 3\n"
    (app / "safehold.toml").write_text(text)
    env = {"SAFEHOLD_STATE_DIR": str(tmp_path / "state"),
           "SAFEHOLD_DRILL_TMPDIR": str(tmp_path)}  # fmt: skip
    plan = ["--plan", str(app / "safehold.toml")]
    assert run_cli(*plan, "init", env=env).returncode == 0
    assert run_cli(*plan, "backup", env=env).returncode == 0
    time.sleep(1.5)  # the RPO of 1s has passed: the newest backup is stale

    result = run_cli(*plan, "status", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    assert "shop-prod: NOT protected" in result.stdout
    for line in (
        "FAIL  backups scheduled",
        "FAIL  newest good backup of db is younger than the RPO (1s)",
        "FAIL  at least two destinations: 1 destination",
        "FAIL  one copy offsite (s3 or sftp)",
        "WARN  offsite backups cannot be deleted with the backup credentials (Object Lock)",
        "FAIL  the last drill passed and is younger than 31d: no drill was ever run",
        "WARN  the runbook is up to date with the plan and the last drill: no runbook at",
        "WARN  retention keeps at least 30 days of history: keeps the last 3 snapshots",
        "PASS  the repository password is not stored next to the backups",
    ):
        assert line in result.stdout, line
    assert "fix: run `safehold drill`" in result.stdout
    assert "fix: run `safehold runbook`" in result.stdout
    assert "fix: run `safehold backup`" in result.stdout

    as_json = run_cli(*plan, "status", "--json", env=env)
    assert as_json.returncode == 2
    card = json.loads(as_json.stdout)
    assert card["result"] == "fail"
    levels = {item["key"]: item["level"] for item in card["items"]}
    assert levels["drill:recent"] == "fail" and levels["key-apart"] == "pass"

    # drill and write the runbook: those items pass now
    assert run_cli(*plan, "drill", env=env).returncode == 1  # stale data fails the RPO check
    fresh = (app / "safehold.toml").read_text().replace('rpo = "1s"', 'rpo = "1d"')
    (app / "safehold.toml").write_text(fresh)
    assert run_cli(*plan, "drill", env=env).returncode == 0
    assert run_cli(*plan, "runbook", env=env).returncode == 0
    after = json.loads(run_cli(*plan, "status", "--json", env=env).stdout)
    levels = {item["key"]: item["level"] for item in after["items"]}
    assert levels["drill:recent"] == "pass" and levels["drill:rto"] == "pass"
    assert levels["runbook"] == "pass" and levels["backup-fresh:db"] == "pass"
    assert after["result"] == "fail"  # still one destination and nothing scheduled


def test_status_of_a_healthy_setup(
    tmp_path: Path,
    run_cli: RunCli,
    s3_server: SeaweedServer,
    http_receiver: HttpReceiver,
) -> None:
    """Two destinations (one offsite, locked, its own password), a schedule installed, an alert
    channel tested, a passing drill and a fresh runbook: every item passes, exit 0."""
    url = f"s3:{s3_server.endpoint}/{s3_server.bucket_name('healthy')}/shop"
    extra = f"""
[[destinations]]
name = "offsite"
type = "s3"
url = "{url}"
password_env = "OFFSITE_PASSWORD"
copy_after_backup = true
object_lock_days = 1

[schedule]
backup = "daily at 02:00"

[release]
rollback_command = "true"

{channel("hook", http_receiver.url())}
"""
    app = make_app(tmp_path, checks=extra)
    crontab = tmp_path / "crontab"
    crontab.write_text(FAKE_CRONTAB)
    crontab.chmod(0o755)
    env = {
        **s3_server.env(),
        "OFFSITE_PASSWORD": "offsite passphrase",
        "SAFEHOLD_STATE_DIR": str(tmp_path / "state"),
        "SAFEHOLD_CRONTAB": str(crontab),
        "CRONTAB_FILE": str(tmp_path / "table"),
        "SAFEHOLD_DRILL_TMPDIR": str(tmp_path),
    }
    plan = ["--plan", str(app / "safehold.toml")]
    for args in (["init"], ["backup"], ["schedule", "install", "--crontab"],
                 ["alerts", "test"], ["release", "start", "--id", "v1"],
                 ["release", "finish", "--id", "v1"], ["drill"], ["runbook"]):  # fmt: skip
        done = run_cli(*plan, *args, env=env)
        assert done.returncode == 0, (args, done.stdout + done.stderr)
    assert http_receiver.next().json()  # the test alert really arrived

    result = run_cli(*plan, "status", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARN" not in result.stdout and "FAIL" not in result.stdout
    assert "shop-prod: protected" in result.stdout
    card = json.loads(run_cli(*plan, "status", "--json", env=env).stdout)
    keys = {item["key"] for item in card["items"]}
    assert {"schedule", "alerts", "drill:recent", "drill:rto", "runbook", "key-apart",
            "retention", "copies:locked", "copies:current:offsite",
            "rollback-plan"} <= keys  # fmt: skip
    assert card["result"] == "pass"


def test_plan_only_commands_without_a_plan(tmp_path: Path, cli_env: dict[str, str]) -> None:
    import subprocess
    import sys

    for command in ("status", "drill", "runbook"):
        result = subprocess.run(
            [sys.executable, "-m", "safehold", command],
            cwd=tmp_path,
            env=cli_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"error: `safehold {command}` needs a plan file (safehold.toml)",
            "hint: write one with `safehold init`, or pass --plan PATH",
        ]
