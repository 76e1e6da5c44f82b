"""Repositories that copy into each other share the chunker polynomial: `init
--copy-chunker-params-from` and a plan's `init` (every destination takes the first one's), so
copies deduplicate fully and never warn about different chunker parameters."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from safehold.backends.local import LocalBackend
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli

OTHER_PASSWORD = "offsite passphrase"
WARNING = "different chunker parameters"


def _polynomial(location: Path, password: str) -> int:
    return Repository.open(LocalBackend(location), password.encode()).config.chunker_polynomial


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout + proc.stderr


def test_init_copies_chunker_params_from_another_repository(
    run_cli: RunCli, tmp_path: Path
) -> None:
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    _ok(run_cli("-r", str(first), "init"))
    other_env = {"SAFEHOLD_PASSWORD": OTHER_PASSWORD, "SAFEHOLD_FROM_PASSWORD": TEST_PASSWORD}
    said = _ok(
        run_cli("-r", str(second), "init", "--copy-chunker-params-from", str(first),
                env=other_env)
    )  # fmt: skip
    assert "chunker parameters copied from" in said
    _ok(run_cli("-r", str(third), "init", env={"SAFEHOLD_PASSWORD": OTHER_PASSWORD}))
    assert _polynomial(second, OTHER_PASSWORD) == _polynomial(first, TEST_PASSWORD)
    assert _polynomial(third, OTHER_PASSWORD) != _polynomial(first, TEST_PASSWORD)

    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(random.Random(1).randbytes(3 * 1024 * 1024))
    _ok(run_cli("-r", str(first), "backup", str(src)))
    copied = _ok(run_cli("-r", str(second), "copy", "--from-repo", str(first), env=other_env))
    assert WARNING not in copied
    # a new backup of the same bytes straight into the copy target adds no data, only a tree
    again = run_cli("-r", str(second), "backup", str(src), "--json", "--force", env=other_env)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["bytes_read"] == 3 * 1024 * 1024  # read again (--force) ...
    assert summary["bytes_added"] < 16 * 1024  # ... yet every chunk was already there
    # the repository made without it still warns
    assert WARNING in _ok(
        run_cli("-r", str(third), "copy", "--from-repo", str(first), env=other_env)
    )


def test_wrong_password_for_the_other_repository_creates_nothing(
    run_cli: RunCli, tmp_path: Path
) -> None:
    _ok(run_cli("-r", str(tmp_path / "first"), "init"))
    result = run_cli("-r", str(tmp_path / "second"), "init", "--copy-chunker-params-from",
                     str(tmp_path / "first"), env={"SAFEHOLD_FROM_PASSWORD": "wrong"})  # fmt: skip
    assert result.returncode == 12, result.stderr
    assert not (tmp_path / "second" / "config").exists()


def test_plan_init_gives_every_destination_the_first_ones_polynomial(
    run_cli: RunCli, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.bin").write_bytes(random.Random(2).randbytes(2 * 1024 * 1024))
    (app / "safehold.toml").write_text(
        """
app = "app"
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
repository = "backups/one"
[[destinations]]
name = "second"
repository = "backups/two"
password_env = "SECOND_PASSWORD"
[[destinations]]
name = "third"
repository = "backups/three"
password_env = "THIRD_PASSWORD"
"""
    )
    env = {"SECOND_PASSWORD": OTHER_PASSWORD, "THIRD_PASSWORD": "third passphrase"}
    plan = ["--plan", str(app / "safehold.toml")]
    _ok(run_cli(*plan, "init", env=env))
    first = _polynomial(app / "backups" / "one", TEST_PASSWORD)
    assert _polynomial(app / "backups" / "two", OTHER_PASSWORD) == first
    assert _polynomial(app / "backups" / "three", "third passphrase") == first
    _ok(run_cli(*plan, "backup", env=env))
    assert WARNING not in _ok(run_cli(*plan, "copy", env=env))

    # a destination added later takes the existing first one's polynomial too
    with open(app / "safehold.toml", "a") as plan_file:
        plan_file.write(
            '[[destinations]]\nname = "fourth"\nrepository = "backups/four"\n'
            'password_env = "FOURTH_PASSWORD"\n'
        )
    env["FOURTH_PASSWORD"] = "fourth passphrase"
    said = _ok(run_cli(*plan, "init", env=env))
    assert "already exists" in said
    assert _polynomial(app / "backups" / "four", "fourth passphrase") == first
