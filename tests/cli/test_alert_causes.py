"""Alerts that show a new cause (issue 14, part 10), end to end through the CLI and a real
loopback webhook: an open problem whose cause changes (wrong password, then a source down)
is told again, naming the new cause and the old one; the same cause again stays quiet; the
recovery names the job that recovered and never closes another job's problem."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_ops_cli import BILLING, channel, setup_app
from tests.conftest import RunCli
from tests.receivers import HttpReceiver


def test_a_new_cause_is_alerted_and_the_recovery_is_the_backups_own(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    smoke = '[[drill.checks]]\ntype = "command"\nname = "boots"\ncommand = "exit 4"\n'
    app = tmp_path / "app"
    plan_file, _ = setup_app(app, BILLING + channel("hook", http_receiver.url()) + smoke)
    plan = ["--plan", plan_file]
    (app / "ready.txt").write_text("exported\n")
    assert run_cli(*plan, "backup").returncode == 0
    drill = run_cli(*plan, "drill", env={"SAFEHOLD_DRILL_TMPDIR": str(tmp_path)})
    assert drill.returncode == 1
    [drill_alert] = [r.json() for r in http_receiver.drain()]
    assert drill_alert["title"] == "shop-prod: drill FAILED"  # stays open meanwhile

    wrong = run_cli(*plan, "backup", env={"SAFEHOLD_PASSWORD": "not the password"})
    assert wrong.returncode == 12, wrong.stderr
    [first] = [r.json() for r in http_receiver.drain()]
    assert first["title"] == "shop-prod: backup FAILED"
    assert "Why: destination local: wrong password" in first["message"]
    again = run_cli(*plan, "backup", env={"SAFEHOLD_PASSWORD": "not the password"})
    assert again.returncode == 12
    assert http_receiver.drain() == []  # the same cause: rate-limited

    (app / "ready.txt").unlink()  # now the password is right, and the billing export is down
    down = run_cli(*plan, "backup")
    assert down.returncode == 3, down.stderr
    [changed] = [r.json() for r in http_receiver.drain()]
    assert changed["title"] == "shop-prod: backup INCOMPLETE: new cause"
    assert changed["type"] == "failure"
    assert "Why: source billing failed" in changed["message"]
    assert "Before, the cause was: destination local: wrong password" in changed["message"]
    assert run_cli(*plan, "backup").returncode == 3
    assert http_receiver.drain() == []  # that cause is told now

    (app / "ready.txt").write_text("exported\n")
    assert run_cli(*plan, "backup").returncode == 0
    [recovered] = [r.json() for r in http_receiver.drain()]
    assert recovered["title"] == "shop-prod: recovered: backup INCOMPLETE"
    assert recovered["type"] == "success"
    assert "The backup job succeeded again" in recovered["message"]
    assert "drill" not in recovered["title"] + recovered["message"]
    assert run_cli(*plan, "backup").returncode == 0
    assert http_receiver.drain() == []  # the drill's problem is the drill's to close
