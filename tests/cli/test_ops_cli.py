"""Scheduled jobs, alerts, the watch, metrics and the daemon through the real CLI, with a real
repository, a loopback HTTP receiver (webhook alerts and pings) and a real SMTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from safehold.alerts.store import StateStore
from safehold.backends import LocalBackend
from safehold.drills.record import DrillRecord, save_drill
from safehold.health.ops_status import alert_items, schedule_items
from safehold.health.scorecard import Level
from safehold.ops.jobs import job_lock
from safehold.plan.loader import parse_plan
from safehold.plan.models import Plan
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli
from tests.ops_helpers import plan_text
from tests.receivers import HttpReceiver, SmtpReceiver, closed_port_url

BILLING = """
[[sources]]
name = "billing"
type = "command"
command = "cat ready.txt"
"""


def setup_app(folder: Path, extra: str) -> tuple[str, Plan]:
    (folder / "uploads").mkdir(parents=True)
    (folder / "uploads" / "a.txt").write_text("hello\n")
    text = plan_text(extra)
    (folder / "safehold.toml").write_text(text)
    Repository.init(
        LocalBackend(folder / "repo"), TEST_PASSWORD.encode(), kdf=KdfParams(1024, 8, 1)
    )
    plan = parse_plan(text, file=folder / "safehold.toml", environ={})
    return str(folder / "safehold.toml"), plan


def channel(name: str, url: str, severity: str = "warning") -> str:
    return f'[[alerts.channels]]\nname = "{name}"\nurl = "{url}"\nseverity = "{severity}"\n'


def test_failed_job_alerts_pings_and_recovers(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    app = tmp_path / "app"
    ping = f"http://127.0.0.1:{http_receiver.port}/ping/backup-uuid"
    extra = BILLING + "[schedule]\n" + channel("hook", http_receiver.url())
    plan_file, _ = setup_app(app, extra + f'[pings]\nbackup = "{ping}"\n')

    failed = run_cli("--plan", plan_file, "job", "backup")
    assert failed.returncode == 3, failed.stderr
    assert "error: source billing failed" in failed.stderr  # the command's output passes through
    requests = http_receiver.drain()
    assert [r.path for r in requests] == [
        "/ping/backup-uuid/start",
        "/hooks/alerts",
        "/ping/backup-uuid/fail",
    ]
    alert = requests[1].json()
    assert alert["title"] == "shop-prod: backup INCOMPLETE" and alert["type"] == "failure"
    assert "saved an INCOMPLETE snapshot" in alert["message"]
    assert "Why: source billing failed: " in alert["message"]
    assert "Do this first: " in alert["message"]
    assert b"source billing failed" in requests[2].body
    jobs = StateStore(app / ".safehold").read("jobs")
    assert jobs["backup"]["status"] == "failed" and jobs["backup"]["exit_code"] == 3

    again = run_cli("--plan", plan_file, "job", "backup")  # still failing: no second alert
    assert again.returncode == 3
    assert [r.path for r in http_receiver.drain()] == [
        "/ping/backup-uuid/start",
        "/ping/backup-uuid/fail",
    ]

    (app / "ready.txt").write_text("invoices\n")
    fixed = run_cli("--plan", plan_file, "job", "backup")
    assert fixed.returncode == 0, fixed.stderr
    requests = http_receiver.drain()
    assert [r.path for r in requests] == [
        "/ping/backup-uuid/start",
        "/hooks/alerts",
        "/ping/backup-uuid",
    ]
    recovery = requests[1].json()
    assert recovery["title"] == "shop-prod: recovered: backup INCOMPLETE"
    assert recovery["type"] == "success"
    jobs = StateStore(app / ".safehold").read("jobs")
    assert jobs["backup"]["status"] == "ok" and jobs["backup"]["last_success"]


def test_a_running_job_is_not_started_twice(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    app = tmp_path / "app"
    ping = f"http://127.0.0.1:{http_receiver.port}/ping/b"
    plan_file, _ = setup_app(app, f'[schedule]\n[pings]\nbackup = "{ping}"\n')
    with job_lock(StateStore(app / ".safehold"), "backup") as acquired:
        assert acquired
        done = run_cli("--plan", plan_file, "job", "backup")
    assert done.returncode == 0, done.stderr
    assert "job backup not started: it is already running" in done.stdout
    assert http_receiver.drain() == []
    assert not list((app / "repo" / "snapshots").iterdir())


def test_alerts_test_records_delivery_for_status(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    app = tmp_path / "app"
    extra = channel("hook", http_receiver.url()) + channel("mail", smtp_receiver.url(), "error")
    plan_file, plan = setup_app(app, extra)
    environ = {"HOME": str(tmp_path)}
    before = alert_items(plan, environ)
    assert [item.level for item in before] == [Level.WARN, Level.WARN]  # never tested
    done = run_cli("--plan", plan_file, "alerts", "test")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "delivered  hook (json://…)",
        "delivered  mail (mailto://…)",
    ]
    assert http_receiver.next().json()["title"] == "shop-prod: test alert"
    assert "test alert" in str(smtp_receiver.next().message["Subject"])
    items = alert_items(plan, environ)
    assert [(i.key, i.level) for i in items] == [("alerts", Level.PASS)]
    assert items[0].title == "alerts configured and the last test delivered"
    assert "hook tested" in items[0].detail and "mail tested" in items[0].detail
    listed = json.loads(run_cli("--plan", plan_file, "alerts", "list", "--json").stdout)
    assert [(c["name"], c["last_test"]) for c in listed["channels"]] == [
        ("hook", "delivered"),
        ("mail", "delivered"),
    ]
    assert str(http_receiver.port) not in json.dumps(listed)  # URLs (tokens) are not listed


def test_a_failed_test_alert_is_one_error_and_shown_by_status(
    tmp_path: Path, run_cli: RunCli
) -> None:
    app = tmp_path / "app"
    dead = closed_port_url() + "/Secr3tT0kenValue99"
    plan_file, plan = setup_app(app, channel("dead", dead))
    done = run_cli("--plan", plan_file, "alerts", "test")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: 1 of 1 test alert(s) were not delivered")
    assert lines[1].startswith("hint: ")
    assert "Secr3tT0kenValue99" not in done.stdout + done.stderr
    items = alert_items(plan, {})
    assert items[0].level is Level.FAIL and "NOT delivered" in items[0].detail
    assert "safehold alerts test --channel dead" in items[0].fix


def test_watch_json_and_exit_codes_and_metrics(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    app = tmp_path / "app"
    textfile = tmp_path / "textfile" / "safehold.prom"
    extra = channel("hook", http_receiver.url()) + f'[metrics]\ntextfile = "{textfile}"\n'
    plan_file, _ = setup_app(app, extra)
    first = run_cli("--plan", plan_file, "watch", "--json")
    assert first.returncode == 2, first.stderr
    report = json.loads(first.stdout)  # pure JSON on stdout
    assert {f["key"] for f in report["findings"] if not f["ok"]} == {"stale:uploads", "drill"}
    assert {a["title"] for a in report["alerts"]} == {
        "source uploads has no good backup within its RPO (1d)",
        "no restore drill yet",
    }
    assert run_cli("--plan", plan_file, "backup").returncode == 0
    repo = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    now = datetime.now().astimezone()
    save_drill(
        repo,
        DrillRecord(
            started=now - timedelta(minutes=2),
            finished=now,
            passed=True,
            snapshot_id="cd" * 32,
            snapshot_name="x",
            snapshot_time=now,
            app="shop",
            env="prod",
            destination="local",
            host="h",
            rto_measured_s=42.5,
            data_age_s=60.0,
            rto_target_s=3600.0,
        ),
    )
    http_receiver.drain()
    second = run_cli("--plan", plan_file, "watch")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ok      source uploads backed up within its RPO" in second.stdout
    assert sorted(r.json()["title"] for r in http_receiver.drain()) == [
        "shop-prod: resolved: no restore drill yet",
        "shop-prod: resolved: source uploads has no good backup within its RPO (1d)",
    ]
    written = textfile.read_text()
    assert 'safehold_rto_measured_seconds{app="shop",env="prod"} 42.5' in written
    shown = run_cli("--plan", plan_file, "metrics")
    assert shown.returncode == 0, shown.stderr
    assert "# TYPE safehold_repository_size_bytes gauge" in shown.stdout
    for line in shown.stdout.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.startswith("safehold_") and name.endswith("}")
    samples = json.loads(run_cli("--plan", plan_file, "metrics", "--json").stdout)
    by_name = {s["name"]: s for s in samples}
    assert by_name["safehold_snapshots"]["value"] == 1
    assert by_name["safehold_snapshots"]["labels"] == {
        "app": "shop",
        "env": "prod",
        "destination": "local",
    }
    assert by_name["safehold_drill_passed"]["value"] == 1


def test_run_catches_up_a_missed_backup_and_stops_on_sigterm(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    app = tmp_path / "app"
    plan_file, plan = setup_app(
        app, '[schedule]\nbackup = "daily at 02:00"\nwatch = "off"\nprune = "off"\ndrill = "off"\n'
    )
    three_days_ago = (datetime.now().astimezone() - timedelta(days=3)).isoformat()
    StateStore(app / ".safehold").write("daemon", {"last_started": {"backup": three_days_ago}})
    daemon = subprocess.Popen(
        [sys.executable, "-m", "safehold", "--plan", plan_file, "run"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        store = StateStore(app / ".safehold")
        deadline = time.monotonic() + 120
        while store.read("jobs").get("backup", {}).get("status") != "ok":
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the caught-up backup did not finish"
            time.sleep(0.2)
        items = schedule_items(plan, {})
        assert items[0].level is Level.PASS and "safehold run" in items[0].detail
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert "missed its run" in out and "catching up once" in out
    assert "safehold run: stopped" in out
    assert store.read("daemon")["status"] == "stopped"
    repo = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    assert [s.reason for s in repo.list_snapshots()] == ["daily"]
    assert "Traceback" not in err
    assert os.path.exists(app / ".safehold" / "jobs.json")


def test_a_requested_drill_runs_once(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    plan_file, _ = setup_app(app, "[schedule]\n")
    assert run_cli("--plan", plan_file, "backup").returncode == 0
    idle = run_cli("--plan", plan_file, "job", "drill", "--if-requested")
    assert idle.returncode == 0 and idle.stdout == ""
    assert "drill" not in StateStore(app / ".safehold").read("jobs")  # nothing ran
    requested = run_cli("--plan", plan_file, "schedule", "request-drill", "--why", "migration 7")
    assert requested.returncode == 0, requested.stderr
    done = run_cli("--plan", plan_file, "job", "drill", "--if-requested")
    assert done.returncode == 0, done.stdout + done.stderr
    assert StateStore(app / ".safehold").read("jobs")["drill"]["status"] == "ok"
    info = json.loads(run_cli("--plan", plan_file, "schedule", "show", "--json").stdout)
    assert info["drill_requested"] is None  # answered: the next check does not drill again
    again = run_cli("--plan", plan_file, "job", "drill", "--if-requested")
    assert again.returncode == 0 and again.stdout == ""


def test_sigterm_stops_a_job_cleanly_without_a_false_alert(
    tmp_path: Path, cli_env: dict[str, str], http_receiver: HttpReceiver
) -> None:
    app = tmp_path / "app"
    slow = '[[sources]]\nname = "export"\ntype = "command"\ncommand = "sleep 30; echo done"\n'
    ping = f"http://127.0.0.1:{http_receiver.port}/ping/b"
    extra = slow + "[schedule]\n" + channel("hook", http_receiver.url())
    plan_file, _ = setup_app(app, extra + f'[pings]\nbackup = "{ping}"\n')
    job = subprocess.Popen(
        [sys.executable, "-m", "safehold", "--plan", plan_file, "job", "backup"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert http_receiver.next(timeout=60).path == "/ping/b/start"
        time.sleep(1.0)  # the backup is inside `sleep 30` now
        os.killpg(job.pid, signal.SIGTERM)  # what systemd and `safehold run` do on stop
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, err
    assert err.splitlines()[-2:] == [
        "error: job backup interrupted (SIGTERM or Ctrl-C); no alert was sent for it",
        "hint: the repository is intact; the next scheduled run (or `safehold job backup`) "
        "starts it again",
    ]
    assert "Traceback" not in err
    assert StateStore(app / ".safehold").read("jobs")["backup"]["status"] == "interrupted"
    assert http_receiver.drain() == []  # no failure alert, no /fail ping for a stop
