"""The .env rule through the real CLI (`python -m safehold`): the .env beside the plan gives
the password to a command typed in a shell exactly as it does to a scheduled job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_PASSWORD

PLAN = """\
app = "shop"
env = "prod"

[targets]
rpo = "24h"
rto = "1h"

[schedule]
backup = "daily at 02:30"

[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]

[[destinations]]
name = "local"
repository = "backups/repository"
"""


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "Traceback" not in done.stderr
    assert TEST_PASSWORD not in done.stdout + done.stderr
    return done


def test_typed_commands_and_jobs_find_the_password_in_the_env_file(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.txt").write_text("hello\n")
    (app / "safehold.toml").write_text(PLAN)
    (app / ".env").write_text(f"SAFEHOLD_PASSWORD='{TEST_PASSWORD}'\n")
    env = {k: v for k, v in cli_env.items() if k != "SAFEHOLD_PASSWORD"}  # only in .env
    plan = ["--plan", str(app / "safehold.toml")]

    init = _run(env, *plan, "init", "--yes")
    assert init.returncode == 0, init.stderr
    assert "generated" not in init.stdout  # the .env password was found, none was made up
    typed = _run(env, *plan, "backup", "--reason", "manual")
    assert typed.returncode == 0, typed.stderr
    job = _run(env, *plan, "job", "backup")
    assert job.returncode == 0, job.stderr

    listing = _run(env, *plan, "snapshots", "--json")
    assert listing.returncode == 0, listing.stderr
    assert len(json.loads(listing.stdout)) == 2  # both opened the same repository
    by_location = _run(env, *plan, "-r", str(app / "backups" / "repository"), "snapshots")
    assert by_location.returncode == 0, by_location.stderr  # -r beside a plan: the same rule

    # the process's own variable wins over .env, for typed commands as for jobs
    wrong = {**env, "SAFEHOLD_PASSWORD": "not the password"}
    refused = _run(wrong, *plan, "snapshots")
    assert refused.returncode == 12 and "wrong password" in refused.stderr
    assert "SAFEHOLD_PASSWORD" in refused.stderr  # where the password came from
    # without the plan, .env is not read
    alone = _run(env, "-r", str(app / "backups" / "repository"), "snapshots")
    assert alone.returncode == 12 and "no repository password given" in alone.stderr


def test_a_password_command_in_the_environment_opens_the_plan_destinations(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The README's first five minutes: SAFEHOLD_PASSWORD_COMMAND exported, then init. A
    destination without a password key takes the environment in the one order, so init uses
    the command's password instead of generating one, and every later command opens with it."""
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.txt").write_text("hello\n")
    (app / "safehold.toml").write_text(PLAN)  # its destination names no password key
    secret = tmp_path / "secret"
    secret.write_text(TEST_PASSWORD + "\n")
    env = {k: v for k, v in cli_env.items() if k != "SAFEHOLD_PASSWORD"}
    env["SAFEHOLD_PASSWORD_COMMAND"] = f"cat {secret}"
    plan = ["--plan", str(app / "safehold.toml")]

    init = _run(env, *plan, "init", "--yes")
    assert init.returncode == 0, init.stderr
    assert "generated" not in init.stdout
    backup = _run(env, *plan, "backup")
    assert backup.returncode == 0, backup.stderr
    by_file = {k: v for k, v in env.items() if k != "SAFEHOLD_PASSWORD_COMMAND"}
    by_file["SAFEHOLD_PASSWORD_FILE"] = str(secret)
    listing = _run(by_file, *plan, "snapshots", "--json")
    assert listing.returncode == 0, listing.stderr
    assert len(json.loads(listing.stdout)) == 1
    checked = _run(env, *plan, "plan", "check")
    assert "SAFEHOLD_PASSWORD_COMMAND" in checked.stdout  # where it comes from, in words
