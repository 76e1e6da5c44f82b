"""`safehold copy` through the real CLI (`python -m safehold` as a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD, RunCli
from tests.sshserver import SshServer

SOURCE_PASSWORD = "the source's own passphrase 41"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


class Runner:
    def __init__(self, run_cli: RunCli, extra_env: dict[str, str] | None = None) -> None:
        self._run_cli = run_cli
        self.extra_env = extra_env or {}

    def __call__(
        self, *args: str | Path, expect: int | None = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = self._run_cli(*map(str, args), env={**self.extra_env, **(env or {})})
        for text in (proc.stdout, proc.stderr):
            assert "Traceback" not in text, text
            assert SOURCE_PASSWORD not in text and TEST_PASSWORD not in text
        if expect is not None:
            assert proc.returncode == expect, f"{args}\n{proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(1_500_000))
    (root / "sub" / "empty").write_bytes(b"")
    return root


def _source_with_snapshots(run: Runner, source: Path, src: Path) -> None:
    env = {"SAFEHOLD_PASSWORD": SOURCE_PASSWORD}
    run("-r", source, "init", env=env)
    run("-r", source, "backup", src, "--note", "first", env=env)
    (src / "b.txt").write_text("bravo\n")
    run("-r", source, "backup", src, "--note", "second", env=env)


def test_cli_copy_text_json_dry_run_and_again(run_cli: RunCli, tmp_path: Path, src: Path) -> None:
    run = Runner(run_cli)
    source, target = tmp_path / "source", tmp_path / "target"
    _source_with_snapshots(run, source, src)
    run("-r", target, "init")  # the target's password: SAFEHOLD_PASSWORD (TEST_PASSWORD)
    from_env = {"SAFEHOLD_FROM_PASSWORD": SOURCE_PASSWORD}

    # no source given, and no source password given: clear errors
    proc = run("-r", target, "copy", expect=1)
    assert "no source repository given" in proc.stderr and "--from-repo" in proc.stderr
    proc = run("-r", target, "copy", "--from-repo", source, expect=12)
    assert "source repository" in proc.stderr and "SAFEHOLD_FROM_PASSWORD" in proc.stderr
    proc = run("-r", target, "copy", "--from-repo", source, expect=12,
               env={"SAFEHOLD_FROM_PASSWORD": "not-the-source-pw-9"})  # fmt: skip
    assert "wrong password" in proc.stderr and "source repository" in proc.stderr

    # --dry-run --json: what would be copied, nothing written
    before = _digest(target)
    planned = json.loads(
        run("-r", target, "copy", "--from-repo", source, "--dry-run", "--json", env=from_env).stdout
    )
    assert planned["dry_run"] is True and planned["snapshots_copied"] == 2
    assert all(item["target_id"] is None for item in planned["copied"])
    assert planned["packs_written"] == 0 and planned["blobs_copied"] > 0
    assert _digest(target) == before

    # a subset by id prefix, with the password from a file given as an option
    source_ids = [
        s["id"]
        for s in json.loads(
            run("-r", source, "snapshots", "--json", env={"SAFEHOLD_PASSWORD": SOURCE_PASSWORD})
            .stdout
        )
    ]  # fmt: skip
    password_file = tmp_path / "source-password"
    password_file.write_text(SOURCE_PASSWORD + "\n")
    proc = run("-r", target, "copy", "--from-repo", source,
               "--from-password-file", password_file, source_ids[0][:8])  # fmt: skip
    assert "copied 1 snapshot(s)" in proc.stdout and "skipped 0 already present" in proc.stdout
    assert f"copied snapshot {source_ids[0][:8]}" in proc.stdout

    # then everything, as JSON: only the second one is new
    result = json.loads(
        run("-r", target, "copy", "--from-repo", source, "--json", env=from_env).stdout
    )
    assert result["dry_run"] is False
    assert [item["source_id"] for item in result["copied"]] == [source_ids[1]]
    assert [item["source_id"] for item in result["skipped"]] == [source_ids[0]]
    assert result["packs_verified"] == result["packs_written"] >= 1
    assert 0 < result["blobs_copied"] < planned["blobs_copied"]

    # again: a no-op, and said so
    proc = run("-r", target, "copy", "--from-repo", source, env=from_env)
    assert "copied 0 snapshot(s), 0 blobs (0.0 MiB), skipped 2 already present" in proc.stdout

    copies = json.loads(run("-r", target, "snapshots", "--json").stdout)
    assert len(copies) == 2 and not set(source_ids) & {c["id"] for c in copies}
    restored = tmp_path / "restored"
    run("-r", target, "restore", "latest", "--target", restored)
    assert _digest(restored / str(src).lstrip("/")) == _digest(src)
    check = json.loads(run("-r", target, "check", "--read-data", "--json").stdout)
    assert check["ok"] is True


def test_cli_copy_local_to_sftp_then_restore(
    sshd_server: SshServer, run_cli: RunCli, tmp_path: Path, src: Path
) -> None:
    run = Runner(run_cli, sshd_server.env())
    source = tmp_path / "source"
    _source_with_snapshots(run, source, src)
    target_path = tmp_path / "remote-target"
    target = sshd_server.location(target_path)
    run("-r", target, "init")
    password_file = tmp_path / "source-password"
    password_file.write_text(SOURCE_PASSWORD)
    proc = run("-r", target, "copy", "--from-repo", source,
               env={"SAFEHOLD_FROM_PASSWORD_FILE": str(password_file)})  # fmt: skip
    assert "copied 2 snapshot(s)" in proc.stdout
    assert (target_path / "config").is_file()
    assert [p for p in target_path.rglob(".tmp-*")] == []
    assert list((target_path / "locks").iterdir()) == []

    restored = tmp_path / "restored"
    run("-r", target, "restore", "latest", "--target", restored)
    assert _digest(restored / str(src).lstrip("/")) == _digest(src)
    again = run("-r", target, "copy", "--from-repo", source, "--json",
                env={"SAFEHOLD_FROM_PASSWORD_FILE": str(password_file)})  # fmt: skip
    value = json.loads(again.stdout)
    assert value["snapshots_copied"] == 0 and value["snapshots_skipped"] == 2
    assert json.loads(run("-r", target, "check", "--read-data", "--json").stdout)["ok"] is True
