"""3-2-1 in practice: one snapshot copied local -> S3 -> SFTP, each copy under its own
password, and a bit-exact restore from every place."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer
from tests.sshserver import SshServer


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_copy_local_to_s3_to_sftp_and_restore_from_each(
    s3_server: SeaweedServer, sshd_server: SshServer, run_cli: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    (source / "nested").mkdir(parents=True)
    (source / "nested" / "big.bin").write_bytes(bytes(range(256)) * 20_000)
    (source / "small.txt").write_text("small\n")
    local = str(tmp_path / "local")
    s3 = f"s3:{s3_server.endpoint}/{s3_server.bucket_name('three')}/repo"
    sftp = sshd_server.location(tmp_path / "sftp-repo")
    passwords = {local: TEST_PASSWORD, s3: "s3 copy passphrase", sftp: "sftp copy passphrase"}
    base = {**sshd_server.env(), "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}  # fmt: skip

    def run(repo: str, *args: str, source_repo: str | None = None) -> str:
        env = {**base, "SAFEHOLD_PASSWORD": passwords[repo]}
        if source_repo is not None:
            env["SAFEHOLD_FROM_PASSWORD"] = passwords[source_repo]
        result = run_cli("-r", repo, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output
        assert all(secret not in output for secret in passwords.values())
        return result.stdout

    for repo in (local, s3, sftp):
        run(repo, "init")
    run(local, "backup", str(source))
    assert "copied 1 snapshot(s)" in run(s3, "copy", "--from-repo", local, source_repo=local)
    assert "copied 1 snapshot(s)" in run(sftp, "copy", "--from-repo", s3, source_repo=s3)
    assert "copied 0 snapshot(s)" in run(sftp, "copy", "--from-repo", s3, source_repo=s3)

    for number, repo in enumerate((local, s3, sftp)):
        target = tmp_path / f"restored-{number}"
        run(repo, "restore", "latest", "--target", str(target))
        assert _digest(target / str(source).lstrip("/")) == _digest(source)
        assert "no errors were found" in run(repo, "check", "--read-data")
