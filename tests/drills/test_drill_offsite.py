"""A drill from the offsite copy: the S3 destination restores on its own (its own password),
and the drill record is stored there, next to the backups it proves."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TEST_PASSWORD, RunCli
from tests.drills.test_drill_cli import make_app
from tests.s3server import SeaweedServer

OFFSITE_PASSWORD = "offsite passphrase, not the local one"


def test_drill_from_the_s3_copy(s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path) -> None:
    url = f"s3:{s3_server.endpoint}/{s3_server.bucket_name('drill')}/shop"
    offsite = f"""
[[destinations]]
name = "offsite"
type = "s3"
url = "{url}"
password_env = "OFFSITE_PASSWORD"
copy_after_backup = true
"""
    app = make_app(tmp_path, checks=offsite)
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "OFFSITE_PASSWORD": OFFSITE_PASSWORD}  # fmt: skip
    plan = ["--plan", str(app / "safehold.toml")]

    def run(*args: str) -> str:
        result = run_cli(*plan, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert TEST_PASSWORD not in output and OFFSITE_PASSWORD not in output
        assert s3_server.secret_key not in output and "Traceback" not in output
        return result.stdout

    run("init")
    run("backup")
    drilled = run("drill", "--from", "offsite")
    assert "drill PASSED" in drilled and "saved in destination offsite" in drilled
    offsite_records = json.loads(run("drills", "--from", "offsite", "--json"))
    assert [r["destination"] for r in offsite_records] == ["offsite"]
    assert offsite_records[0]["passed"] is True
    assert json.loads(run("drills", "--json")) == []  # the local repository was not drilled
