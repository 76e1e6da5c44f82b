"""The 3-2-1 plan end to end: a local repository, an S3 bucket with Object Lock and an SFTP
server, each with its own password, kept in step by `backup` (copy after backup) and `copy`;
`forget --dry-run` explains itself; holding the production credentials is not enough to delete
a backup from the locked bucket; and each place restores on its own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from safehold.backends.base import ObjectLockedError
from safehold.backends.s3 import S3Backend
from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer
from tests.sshserver import SshServer

S3_PASSWORD = "s3 offsite passphrase"
SFTP_PASSWORD = "sftp offsite passphrase"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_local_s3_locked_and_sftp_in_step(
    s3_server: SeaweedServer, sshd_server: SshServer, run_cli: RunCli, tmp_path: Path
) -> None:
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.bin").write_bytes(bytes(range(256)) * 4000)
    s3_url = f"s3:{s3_server.endpoint}/{s3_server.bucket_name('three')}/shop"
    sftp_url = sshd_server.location(tmp_path / "sftp-repo")
    (app / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "1h"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "local"
repository = "backups"
[[destinations]]
name = "s3"
type = "s3"
url = "{s3_url}"
password_env = "S3_PASSWORD"
copy_after_backup = true
object_lock_days = 1
[[destinations]]
name = "sftp"
type = "sftp"
url = "{sftp_url}"
password_env = "SFTP_PASSWORD"
"""
    )
    env = {**sshd_server.env(), **s3_server.env(), "S3_PASSWORD": S3_PASSWORD,
           "SFTP_PASSWORD": SFTP_PASSWORD}  # fmt: skip
    plan = ["--plan", str(app / "safehold.toml")]

    def run(*args: str) -> str:
        result = run_cli(*plan, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output
        for secret in (TEST_PASSWORD, S3_PASSWORD, SFTP_PASSWORD, s3_server.secret_key):
            assert secret not in output
        return result.stdout

    created = run("init")
    assert all(f"for destination {name}" in created for name in ("local", "s3", "sftp"))
    assert "copied 1 snapshot(s) to s3" in run("backup")
    assert "copied 1 snapshot(s)," in run("copy", "--to", "sftp")
    (app / "uploads" / "b.bin").write_bytes(b"second day\n" * 1000)
    assert "copied 1 snapshot(s) to s3" in run("backup")
    run("copy")
    listed = json.loads(run("snapshots", "--json"))
    assert [s["destinations"] for s in listed] == [["local", "s3", "sftp"]] * 2

    explained = run("forget", "--dry-run")
    assert "KEEP" in explained and "daily" in explained

    # An attacker holding the production credentials (the plan's AWS keys) tries to delete the
    # newest snapshot and a data pack from the bucket: Object Lock refuses both.
    backend = S3Backend(s3_url, credentials=(s3_server.access_key, s3_server.secret_key))
    names = [info.name for info in backend.list("")]
    snapshot = next(n for n in names if n.startswith("snapshots/"))
    pack = next(n for n in names if n.startswith("data/"))
    for name in (snapshot, pack):
        with pytest.raises(ObjectLockedError):
            backend.delete(name)
    assert {info.name for info in backend.list("")} >= {snapshot, pack}

    for destination, password in (("local", TEST_PASSWORD), ("s3", S3_PASSWORD),
                                  ("sftp", SFTP_PASSWORD)):  # fmt: skip
        target = tmp_path / f"restored-{destination}"
        location = {"local": str(app / "backups"), "s3": s3_url, "sftp": sftp_url}[destination]
        result = run_cli("-r", location, "restore", "latest", "--target", str(target),
                         env={**env, "SAFEHOLD_PASSWORD": password})  # fmt: skip
        assert result.returncode == 0, result.stderr
        restored = target / "uploads" / "uploads"  # /<source>/<folder> in the snapshot
        assert _digest(restored) == _digest(app / "uploads")

    card = json.loads(run_cli(*plan, "status", "--json", env=env).stdout)
    levels = {item["key"]: item["level"] for item in card["items"]}
    for key in ("copies:count", "copies:offsite", "copies:locked", "copies:current:s3",
                "copies:current:sftp", "backup-fresh:uploads"):  # fmt: skip
        assert levels[key] == "pass", key
