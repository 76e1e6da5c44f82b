"""`safehold status` through the CLI: a neglected setup is told exactly what to fix, item by
item, and exits 2; fixing the drill and the runbook turns those items green."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import TEST_PASSWORD, RunCli
from tests.drills.test_drill_cli import make_app


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
