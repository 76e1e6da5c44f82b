"""`safehold schedule install|show|remove`: systemd units that `systemd-analyze verify`
accepts (checked structurally too), crontab lines that parse, one command to install, the
same again to replace, remove to undo."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

from safehold.policy.schedule import parse_schedule
from tests.conftest import RunCli
from tests.ops_helpers import make_plan

SCHEDULE = '[schedule]\nbackup = "daily at 02:30"\nwatch = "every 15m"\n'


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_install_show_remove(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    make_plan(app, SCHEDULE)
    units = tmp_path / "units"
    plan = str(app / "safehold.toml")
    done = run_cli("--plan", plan, "schedule", "install", "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in units.iterdir())
    expected = [
        f"safehold-shop-prod-{job}.{kind}"
        for job in ("backup", "prune", "drill", "watch")
        for kind in ("service", "timer")
    ]
    assert names == sorted([*expected, "safehold-shop-prod-drill.path"])
    backup_timer = read_unit(units / "safehold-shop-prod-backup.timer")
    assert backup_timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00"
    assert backup_timer["Timer"]["Persistent"] == "true"
    assert backup_timer["Timer"]["Unit"] == "safehold-shop-prod-backup.service"
    assert backup_timer["Install"]["WantedBy"] == "timers.target"
    service = read_unit(units / "safehold-shop-prod-backup.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].endswith(f"-m safehold --plan {plan} job backup")
    assert service["Service"]["WorkingDirectory"] == str(app)
    path_unit = read_unit(units / "safehold-shop-prod-drill.path")
    assert path_unit["Path"]["PathExists"] == str(app / ".safehold" / "drill-request.json")
    assert "password" in done.stderr  # scheduled jobs do not see the shell's password
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # CI installs systemd (scripts/test-all.sh), so this runs there
        verified = subprocess.run([analyze, "verify", *map(str, sorted(units.iterdir()))],
                                  capture_output=True, text=True, check=False)  # fmt: skip
        assert verified.returncode == 0, verified.stderr

    shown = run_cli("--plan", plan, "schedule", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["installed"] == "systemd" and info["problems"] == []
    jobs = {row["job"]: row for row in info["jobs"]}
    assert jobs["backup"]["cron"] == "30 2 * * *" and "02:30" in jobs["backup"]["next_run"]
    assert jobs["backup"]["runs"] == "backup --reason daily"
    assert jobs["prune"]["runs"] == "forget --prune --force"  # one destination
    text = run_cli("--plan", plan, "schedule", "show").stdout
    assert "backup: daily at 02:30" in text and "next run:" in text

    (units / "safehold-shop-prod-backup.timer").unlink()
    info = json.loads(run_cli("--plan", plan, "schedule", "show", "--json").stdout)
    assert info["problems"] == ["unit files are gone: safehold-shop-prod-backup.timer"]

    removed = run_cli("--plan", plan, "schedule", "remove")
    assert removed.returncode == 0, removed.stderr
    assert list(units.iterdir()) == []
    info = json.loads(run_cli("--plan", plan, "schedule", "show", "--json").stdout)
    assert info["installed"] is None


FAKE_CRONTAB = """#!/bin/sh
# crontab -l / crontab - against a file (the real one edits the system's spool)
if [ "$1" = "-l" ]; then
    [ -f "$CRONTAB_FILE" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }
    cat "$CRONTAB_FILE"
elif [ "$1" = "-" ]; then
    cat > "$CRONTAB_FILE"
else
    exit 2
fi
"""


def test_crontab_lines_install_replace_and_remove(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    make_plan(app, SCHEDULE + 'drill = "0 4 1 * *"\n')
    program = tmp_path / "crontab"
    program.write_text(FAKE_CRONTAB)
    program.chmod(0o755)
    table = tmp_path / "table"
    table.write_text("MAILTO=ops@example.test\n0 1 * * * /usr/local/bin/other-job\n")
    env = {"SAFEHOLD_CRONTAB": str(program), "CRONTAB_FILE": str(table)}
    plan = str(app / "safehold.toml")
    for _ in range(2):  # installing twice replaces, never duplicates
        done = run_cli("--plan", plan, "schedule", "install", "--crontab", env=env)
        assert done.returncode == 0, done.stderr
    lines = table.read_text().splitlines()
    assert lines[:2] == ["MAILTO=ops@example.test", "0 1 * * * /usr/local/bin/other-job"]
    ours = [line for line in lines[2:] if not line.startswith("#")]
    assert sum(line.startswith("# BEGIN safehold-shop-prod") for line in lines) == 1
    schedules = {}
    for line in ours:
        fields = line.split(None, 5)
        cron = parse_schedule(" ".join(fields[:5]))  # the five fields parse as cron
        assert cron is not None
        command = fields[5]
        assert command.startswith(f"cd {app} && ")
        assert f"-m safehold --plan {plan} job " in command
        assert command.endswith(".log 2>&1")
        job = command.split(" job ", 1)[1].split()[0]
        schedules[job + (" (request)" if "--if-requested" in command else "")] = cron.expression
    assert schedules == {
        "backup": "30 2 * * *",
        "prune": "0 0 * * 0",
        "drill": "0 4 1 * *",
        "drill (request)": "*/15 * * * *",
        "watch": "*/15 * * * *",
    }
    info = json.loads(run_cli("--plan", plan, "schedule", "show", "--json", env=env).stdout)
    assert info["installed"] == "crontab" and info["problems"] == []
    done = run_cli("--plan", plan, "schedule", "remove", env=env)
    assert done.returncode == 0, done.stderr
    assert table.read_text().splitlines() == lines[:2]


def test_install_without_schedule_table_says_what_to_add(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    make_plan(app)
    done = run_cli("--plan", str(app / "safehold.toml"), "schedule", "install", "--unit-dir",
                   str(tmp_path / "u"))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: the plan has no [schedule] table",
        'hint: add [schedule] with backup = "daily at 02:00" (the other jobs have defaults), '
        "then run `safehold schedule install` again",
    ]


def test_request_drill_is_shown(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    make_plan(app, SCHEDULE)
    plan = str(app / "safehold.toml")
    done = run_cli("--plan", plan, "schedule", "request-drill", "--why", "migration 0042")
    assert done.returncode == 0, done.stderr
    info = json.loads(run_cli("--plan", plan, "schedule", "show", "--json").stdout)
    assert info["drill_requested"]["why"] == "migration 0042"
