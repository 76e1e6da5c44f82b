"""The plan workflow end to end through the CLI: init, plan check, backup, restore."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD, RunCli


def _clean(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert TEST_PASSWORD not in output
    return output


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "shop"
    (app / "uploads" / "2026").mkdir(parents=True)
    (app / "uploads" / "2026" / "receipt.pdf").write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 40)
    with sqlite3.connect(app / "app.sqlite3") as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        connection.executemany(
            "INSERT INTO users (email) VALUES (?)", [(f"u{i}@shop.test",) for i in range(250)]
        )
    return app


def _run_in(run_cli: RunCli, app: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return run_cli("--plan", str(app / "safehold.toml"), *args, env=env)


def test_init_backup_restore_through_the_plan(app_dir: Path, run_cli: RunCli) -> None:
    init = _run_in(run_cli, app_dir, "init", "--yes")
    assert init.returncode == 0, init.stderr
    output = _clean(init)
    assert "folder uploads/" in output and "SQLite file app.sqlite3" in output
    assert (app_dir / "safehold.toml").exists()
    assert (app_dir / "backups" / "repository" / "config").exists()

    check = _run_in(run_cli, app_dir, "plan", "check")
    assert check.returncode == 0, check.stderr
    assert "plan OK" in _clean(check)

    backup = _run_in(run_cli, app_dir, "backup", "--reason", "predeploy", "--note", "v42")
    assert backup.returncode == 0, backup.stderr
    output = _clean(backup)
    name = re.search(r"saved as (\S+)", output)
    assert name and re.fullmatch(r"shop-prod-\d{4}-\d\d-\d\d-predeploy-v42", name.group(1))

    listing = _run_in(run_cli, app_dir, "snapshots", "--reason", "predeploy")
    assert name.group(1) in listing.stdout
    assert _run_in(run_cli, app_dir, "backup", "--reason", "daily").returncode == 0
    pre = str(app_dir.parent / "pre.sqlite3")
    by_reason = _run_in(run_cli, app_dir, "restore", "latest", "--reason", "predeploy",
                        "--source", "app", "--into", pre)  # fmt: skip
    assert by_reason.returncode == 0 and name.group(1) in by_reason.stdout

    restored = app_dir.parent / "restored.sqlite3"
    result = _run_in(run_cli, app_dir, "restore", name.group(1), "--source", "app",
                     "--into", str(restored))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "users: 250 rows (matches backup)" in _clean(result)
    with sqlite3.connect(restored) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone()[0] == 250

    files_target = app_dir.parent / "restored-files"
    result = _run_in(run_cli, app_dir, "restore", "latest", "--source", "uploads",
                     "--into", str(files_target))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (files_target / "uploads" / "2026" / "receipt.pdf").read_bytes() == (
        app_dir / "uploads" / "2026" / "receipt.pdf"
    ).read_bytes()


def test_production_restore_is_refused_then_done_with_evidence(
    app_dir: Path, run_cli: RunCli
) -> None:
    assert _run_in(run_cli, app_dir, "init", "--yes").returncode == 0
    assert _run_in(run_cli, app_dir, "backup").returncode == 0
    database = app_dir / "app.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM users WHERE id > 10")  # the accident

    refused = _run_in(run_cli, app_dir, "restore", "latest", "--source", "app",
                      "--into", str(database))  # fmt: skip
    assert refused.returncode == 1
    assert "refusing to restore source app into its production location" in _clean(refused)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone()[0] == 10

    forced = _run_in(run_cli, app_dir, "restore", "latest", "--source", "app",
                     "--into", str(database), "--to-production", "--yes")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    output = _clean(forced)
    evidence = re.search(r"evidence snapshot \w+ saved as (\S+)", output)
    assert evidence and "-evidence-" in evidence.group(1)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone()[0] == 250
    snapshots = _run_in(run_cli, app_dir, "snapshots", "--reason", "evidence", "--json")
    assert evidence.group(1) in snapshots.stdout


def test_a_failing_source_exits_non_zero_and_names_it(app_dir: Path, run_cli: RunCli) -> None:
    (app_dir / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1h"
rto = "30m"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[sources]]
name = "crm"
type = "command"
command = "echo 'login failed for ${{CRM_TOKEN}}' >&2; exit 3"
[[destinations]]
name = "local"
repository = "{app_dir / "repo"}"
"""
    )
    env = {"CRM_TOKEN": "tok-9f8e7d6c5b4a"}
    assert _run_in(run_cli, app_dir, "init", env=env).returncode == 0
    result = _run_in(run_cli, app_dir, "backup", env=env)
    assert result.returncode == 3
    output = _clean(result)
    assert "tok-9f8e7d6c5b4a" not in output
    assert "source crm failed" in output and "exited with status 3" in output
    assert "INCOMPLETE" in output
    listing = _run_in(run_cli, app_dir, "snapshots", "--json", env=env)
    assert '"complete": false' in listing.stdout
    restored = app_dir.parent / "r"
    ok = _run_in(run_cli, app_dir, "restore", "latest", "--source", "uploads",
                 "--into", str(restored), env=env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'app = "a"\nenv = "p"\n[targets]\nrpo = "1h"\nrto = "1h"\n[[sources]]\nname = "x"\n'
            'type = "files"\npathz = ["u"]\n[[destinations]]\nname = "l"\nrepository = "r"\n',
            "safehold.toml: sources[0].pathz: unknown key (did you mean paths?)",
        ),
        (
            'app = "a"\nenv = "p"\n[targets]\nrpo = "soon"\nrto = "1h"\n[[sources]]\nname = "x"\n'
            'type = "files"\npaths = ["u"]\n[[destinations]]\nname = "l"\nrepository = "r"\n',
            'safehold.toml: targets.rpo: expected a duration like 15m, 1h or 7d; found "soon"',
        ),
        (
            'app = "a"\nenv = "p"\n[targets]\nrpo = "1h"\nrto = "1h"\n[[sources]]\nname = "x"\n'
            'type = "postgres"\nurl = "${NOPE_URL}"\n[[destinations]]\nname = "l"\n'
            'repository = "r"\n',
            "NOPE_URL",
        ),
    ],
)
def test_bad_plans_give_one_clear_line(
    tmp_path: Path, run_cli: RunCli, body: str, message: str
) -> None:
    (tmp_path / "safehold.toml").write_text(body)
    result = run_cli("--plan", str(tmp_path / "safehold.toml"), "plan", "check")
    assert result.returncode == 1
    first = _clean(result).splitlines()[0]
    assert first.startswith("error: ") and message in first
    assert "hint: " in result.stderr


def test_init_detects_bucket_and_secrets_and_warns_about_the_disk(
    tmp_path: Path, run_cli: RunCli
) -> None:
    app = tmp_path / "site"
    (app / "media").mkdir(parents=True)
    (app / "config").mkdir()
    (app / "config" / "master.key").write_text("k")
    (app / ".env").write_text("SECRET_KEY=s3cr3t-value\nS3_BUCKET=site-uploads\n")
    init = _run_in(run_cli, app, "init", "--yes")
    assert init.returncode == 0, init.stderr
    output = _clean(init)
    assert "S3 bucket in ${S3_BUCKET}" in output
    assert "secret file .env (age-encrypted)" in output
    assert "secret file config/master.key (age-encrypted)" in output
    assert "warning: the repository" in init.stderr and "inside the app folder" in init.stderr
    assert "s3cr3t-value" not in output and "site-uploads" not in output
    # the generated identity: shown once on stdout, only its public key in the plan
    identity = re.search(r"AGE-SECRET-KEY-1[0-9A-Z]+", init.stdout)
    assert identity and "shown ONCE" in init.stdout and "--identity FILE" in init.stdout
    plan_text = (app / "safehold.toml").read_text()
    assert identity.group(0) not in plan_text and 'type = "secrets"' in plan_text
    assert not any(identity.group(0).encode() in p.read_bytes() for p in app.rglob("*")
                   if p.is_file())  # fmt: skip
    check = _run_in(run_cli, app, "plan", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_init_uses_the_given_age_recipient_and_refuses_a_bad_one(
    tmp_path: Path, run_cli: RunCli
) -> None:
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    app = tmp_path / "site"
    app.mkdir()
    (app / ".env").write_text("SECRET_KEY=s3cr3t-value\n")
    bad = _run_in(run_cli, app, "init", "--yes", env={"SAFEHOLD_AGE_RECIPIENT": "age1nope"})
    assert bad.returncode != 0 and "SAFEHOLD_AGE_RECIPIENT is not an age public key" in bad.stderr
    assert not (app / "safehold.toml").exists()
    init = _run_in(run_cli, app, "init", "--yes", env={"SAFEHOLD_AGE_RECIPIENT": recipient})
    assert init.returncode == 0, init.stderr
    assert "AGE-SECRET-KEY" not in init.stdout and recipient in init.stdout
    assert f'recipients = ["{recipient}"]' in (app / "safehold.toml").read_text()


def test_plan_check_refuses_and_connect_reports(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "shop"
    (app / "media").mkdir(parents=True)
    (app / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1h"\nrto = "1h"\n'
        '[[sources]]\nname = "up"\ntype = "files"\npaths = ["meida"]\n'
        '[[destinations]]\nname = "local"\nrepository = "/nonexistent-safehold/repo"\n'
        '[[alerts.channels]]\nname = "ops"\nurl = "slak://Tok3nSecret/x"\n'
    )
    check = _run_in(run_cli, app, "plan", "check")
    assert check.returncode == 1
    output = _clean(check)
    assert 'FAIL source up: meida does not exist (did you mean "media"?)' in output
    assert "FAIL alert channel ops: apprise knows no slak:// URLs" in output
    assert "plan NOT OK: 2 problem(s)" in output and "Tok3nSecret" not in output

    connect = _run_in(run_cli, app, "plan", "check", "--connect", "--json")
    assert connect.returncode == 1
    findings = json.loads(connect.stdout)
    assert [(f["status"], f["what"]) for f in findings] == [
        ("FAIL", "alert channel ops"),
        ("FAIL", "source up"),
        ("FAIL", "destination local"),
    ]
    assert "Tok3nSecret" not in _clean(connect)
