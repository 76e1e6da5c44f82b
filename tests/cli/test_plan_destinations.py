"""Two destinations in a plan: a local repository and an offsite SFTP one under another
password, kept in step by copy-after-backup and `copy --to`; forget sees the offsite copy."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TEST_PASSWORD, RunCli
from tests.sshserver import SshServer

OFFSITE_PASSWORD = "a different passphrase for the offsite copy"


def test_offsite_sftp_destination_in_the_plan(
    sshd_server: SshServer, run_cli: RunCli, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.txt").write_text("first\n")
    offsite = tmp_path / "offsite-repo"
    (app / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1h"
rto = "1h"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "local"
repository = "repo"
[[destinations]]
name = "offsite"
type = "sftp"
url = "{sshd_server.location(offsite)}"
password_env = "OFFSITE_PASSWORD"
copy_after_backup = true
[retention]
keep_last = 1
"""
    )
    env = {**sshd_server.env(), "OFFSITE_PASSWORD": OFFSITE_PASSWORD}
    plan = ("--plan", str(app / "safehold.toml"))

    def run(*args: str, extra: dict[str, str] | None = None) -> str:
        result = run_cli(*plan, *args, env={**env, **(extra or {})})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output
        assert TEST_PASSWORD not in output and OFFSITE_PASSWORD not in output
        return result.stdout

    check = run("plan", "check")
    assert "offsite" in check and "OFFSITE_PASSWORD" in check
    created = run("init")  # every destination, each with its own password
    assert "for destination local" in created and "for destination offsite" in created
    assert "already exists; nothing to create" in run("init")

    output = run("backup")
    assert "copied 1 snapshot(s) to offsite" in output
    (app / "uploads" / "a.txt").write_text("second\n")
    run("backup")
    again = run("copy", "--to", "offsite", "--json")
    assert json.loads(again)["snapshots_copied"] == 0
    listed = json.loads(run("snapshots", "--json"))
    assert [s["destinations"] for s in listed] == [["local", "offsite"], ["local", "offsite"]]
    assert "[local, offsite]" in run("snapshots")

    offsite_ids = json.loads(run("-r", sshd_server.location(offsite), "snapshots", "--json",
                                 extra={"SAFEHOLD_PASSWORD": OFFSITE_PASSWORD}))  # fmt: skip
    assert len(offsite_ids) == 2
    restored = tmp_path / "restored"
    run("-r", sshd_server.location(offsite), "restore", "latest", "--target", str(restored),
        extra={"SAFEHOLD_PASSWORD": OFFSITE_PASSWORD})  # fmt: skip
    assert (restored / "uploads" / "uploads" / "a.txt").read_text() == "second\n"

    # the older local snapshot is also offsite, so the policy may remove it without --force
    forgotten = run("forget")
    assert "REMOVE" in forgotten and "removed 1 snapshot(s)" in forgotten
