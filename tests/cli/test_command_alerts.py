"""Commands started by hand (or by a deploy hook) alert like scheduled jobs: a failed
pre-deploy backup or drill sends one alert saying what, why and what to do, a later success
sends "recovered"; a job's own child commands stay quiet (the job alerts); a channel that
cannot be reached never changes the command's result."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_ops_cli import BILLING, channel, setup_app
from tests.conftest import RunCli
from tests.receivers import HttpReceiver, closed_port_url


def test_a_failed_predeploy_backup_alerts_once_and_recovers(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    app = tmp_path / "app"
    plan_file, _ = setup_app(app, BILLING + channel("hook", http_receiver.url()))
    plan = ["--plan", plan_file]

    failed = run_cli(*plan, "backup", "--reason", "predeploy", "--note", "v42")
    assert failed.returncode == 3, failed.stderr  # the deploy stops
    [alert] = [r.json() for r in http_receiver.drain()]
    assert alert["title"] == "shop-prod: backup INCOMPLETE"
    assert "started by hand saved an INCOMPLETE snapshot" in alert["message"]
    assert "Why: source billing failed: " in alert["message"]
    assert "Do this first: " in alert["message"]

    again = run_cli(*plan, "backup", "--reason", "predeploy", "--note", "v42")
    assert again.returncode == 3
    assert http_receiver.drain() == []  # the same open problem: no second alert

    (app / "ready.txt").write_text("exported\n")
    fixed = run_cli(*plan, "backup", "--reason", "predeploy", "--note", "v42")
    assert fixed.returncode == 0, fixed.stderr
    [recovered] = [r.json() for r in http_receiver.drain()]
    assert recovered["title"] == "shop-prod: recovered: backup INCOMPLETE"
    assert run_cli(*plan, "backup").returncode == 0
    assert http_receiver.drain() == []  # nothing to say when all is well


def test_a_failed_drill_alerts_with_its_reasons(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    smoke = '[[drill.checks]]\ntype = "command"\nname = "boots"\ncommand = "exit 4"\n'
    app = tmp_path / "app"
    plan_file, _ = setup_app(app, channel("hook", http_receiver.url()) + smoke)
    plan = ["--plan", plan_file]
    assert run_cli(*plan, "backup").returncode == 0
    env = {"SAFEHOLD_DRILL_TMPDIR": str(tmp_path)}

    as_job_child = run_cli(*plan, "drill", env={**env, "SAFEHOLD_JOB": "drill"})
    assert as_job_child.returncode == 1
    assert http_receiver.drain() == []  # a job's child: the job wrapper alerts, not the child

    failed = run_cli(*plan, "drill", env=env)
    assert failed.returncode == 1
    [alert] = [r.json() for r in http_receiver.drain()]
    assert alert["title"] == "shop-prod: drill FAILED"
    assert "Why: check failed: boots: exit code 4" in alert["message"]


def test_an_unreachable_channel_never_changes_the_result(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    dead = closed_port_url() + "/T0kenThatMustNotLeak"
    plan_file, _ = setup_app(app, BILLING + channel("dead", dead))
    failed = run_cli("--plan", plan_file, "backup")
    assert failed.returncode == 3
    assert "error: source billing failed" in failed.stderr
    assert "warning: the alert was not delivered to dead" in failed.stderr
    assert "T0kenThatMustNotLeak" not in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr
