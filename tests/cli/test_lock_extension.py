"""Locks that keep protecting (issue 14, part 1), against a real S3 server (SeaweedFS).

Deduplicated packs a new snapshot reuses were locked when an older backup wrote them; every
backup, copy and prune must push their retention to at least `object_lock_days` from now, in
both modes, incrementally, and `lock status` must read the dates from the server."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.backends.s3 import S3Backend
from safehold.repo.objectlock import kept_objects
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer


class LockedRepo:
    def __init__(self, server: SeaweedServer, run_cli: RunCli, tmp_path: Path, mode: str) -> None:
        self.server = server
        self.run_cli = run_cli
        self.mode = mode
        self.bucket = server.bucket_name("extend")
        self.location = f"s3:{server.endpoint}/{self.bucket}/app"
        self.cache = tmp_path / "cache"
        self.source = tmp_path / "src"
        self.source.mkdir()

    def env(self, days: float) -> dict[str, str]:
        return {
            **self.server.env(),
            "SAFEHOLD_S3_OBJECT_LOCK": f"{self.mode.lower()}:{days:g}",
            "SAFEHOLD_CACHE_DIR": str(self.cache),
            "SAFEHOLD_FROM_PASSWORD": TEST_PASSWORD,
        }

    def run(self, *args: str, days: float, code: int = 0) -> str:
        result = self.run_cli("-r", self.location, *args, env=self.env(days))
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        assert "Traceback" not in output and self.server.secret_key not in output
        return result.stdout

    def backend(self) -> S3Backend:
        keys = (self.server.access_key, self.server.secret_key)
        return S3Backend(self.location, credentials=keys)

    def newest_objects(self) -> list[str]:
        repo = Repository.open(self.backend(), TEST_PASSWORD.encode())
        return kept_objects(repo, [repo.list_snapshots()[-1]])

    def retention(self, name: str) -> tuple[str, datetime]:
        head = self.server.client().head_object(Bucket=self.bucket, Key=f"app/{name}")
        return head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_reused_packs_stay_locked_for_the_policy_days(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path, mode: str
) -> None:
    repo = LockedRepo(s3_server, run_cli, tmp_path, mode)
    repo.run("init", days=1)
    (repo.source / "big.bin").write_bytes(os.urandom(600_000))
    (repo.source / "small.txt").write_text("unchanged\n")
    first = json.loads(repo.run("backup", str(repo.source), "--json", days=1))
    assert first["object_lock"]["mode"] == mode and first["object_lock"]["failed"] == []
    first_packs = {name for name in repo.newest_objects() if name.startswith("data/")}
    assert first_packs
    written = {name: repo.retention(name)[1] for name in first_packs}

    # The policy grows to 3 days: the second backup reuses every pack of the first one (the
    # files did not change) and must push their retention, written for 1 day, to 3 days.
    before = datetime.now(UTC)
    second = json.loads(repo.run("backup", str(repo.source), "--json", days=3))
    assert second["snapshot_id"] != first["snapshot_id"]
    report = second["object_lock"]
    newest = repo.newest_objects()
    reused = first_packs & set(newest)  # the file contents' packs (a changed tree may not be)
    assert reused
    assert report["failed"] == [] and report["extended"] >= len(reused)
    kinds = {name.split("/", 1)[0] for name in newest}
    assert {"config", "keys", "index", "snapshots", "data"} <= kinds
    for name in newest:
        got_mode, until = repo.retention(name)
        assert got_mode == mode, name
        assert until >= before + timedelta(days=3), (name, until)
    for name in reused:
        assert repo.retention(name)[1] > written[name]

    # Incremental: nothing is below the policy now, so a third backup extends nothing.
    third = json.loads(repo.run("backup", str(repo.source), "--json", days=3))
    assert third["object_lock"]["extended"] == 0
    assert third["object_lock"]["objects"] > len(newest)  # three snapshot files now

    # lock status reads the server: OK against 3 days, below a 10-day policy.
    status = json.loads(repo.run("lock", "status", "--json", days=3))["destinations"][0]
    assert status["meets_policy"] is True and status["mode"] == mode
    assert status["snapshot"] == third["snapshot_id"]
    earliest = datetime.fromisoformat(status["earliest_retain_until"])
    assert earliest >= before + timedelta(days=3)
    assert status["objects"] == len(repo.newest_objects())
    below = json.loads(repo.run("lock", "status", "--json", days=10, code=1))["destinations"][0]
    assert below["meets_policy"] is False
    assert "below the policy's 10 days" in below["problem"]
    text = repo.run("lock", "status", days=10, code=1)
    assert "BELOW POLICY" in text and "earliest retain-until" in text


def test_copy_and_prune_extend_the_target_locks(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """A copy into a locked target extends what the copied snapshots reuse there; prune
    extends what the kept snapshots need after it dropped the rest."""
    target = LockedRepo(s3_server, run_cli, tmp_path, "GOVERNANCE")
    local = str(tmp_path / "local")
    plain: dict[str, Any] = {"SAFEHOLD_CACHE_DIR": str(target.cache)}

    def local_run(*args: str) -> str:
        result = run_cli("-r", local, *args, env=plain)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    local_run("init")
    target.run("init", days=1)
    (target.source / "data.bin").write_bytes(os.urandom(400_000))
    local_run("backup", str(target.source))
    copied = json.loads(target.run("copy", "--from-repo", local, "--json", days=1))
    assert copied["object_lock"]["failed"] == []
    (target.source / "more.bin").write_bytes(os.urandom(100_000))
    local_run("backup", str(target.source))
    before = datetime.now(UTC)
    second = json.loads(target.run("copy", "--from-repo", local, "--json", days=4))
    assert second["object_lock"]["extended"] > 0
    for name in target.newest_objects():
        assert target.retention(name)[1] >= before + timedelta(days=4), name

    before = datetime.now(UTC)
    pruned = target.run("prune", days=6)
    assert "Object Lock:" in pruned and "extended" in pruned
    for name in target.newest_objects():
        assert target.retention(name)[1] >= before + timedelta(days=6), name


def _plan(app: Path, s3_url: str, days: float) -> None:
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
name = "vault"
type = "s3"
url = "{s3_url}"
password_env = "VAULT_PASSWORD"
copy_after_backup = true
object_lock_days = {days:g}
object_lock_mode = "compliance"
"""
    )


def test_status_and_watch_warn_when_the_newest_backup_is_locked_too_briefly(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    (app / "uploads" / "a.bin").write_bytes(os.urandom(300_000))
    bucket = s3_server.bucket_name("vault")
    s3_url = f"s3:{s3_server.endpoint}/{bucket}/shop"
    _plan(app, s3_url, 1)
    env = {**s3_server.env(), "VAULT_PASSWORD": "vault password 42",
           "SAFEHOLD_CACHE_DIR": str(tmp_path / "cache"),
           "SAFEHOLD_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    plan = ["--plan", str(app / "safehold.toml")]

    def run(*args: str, code: int = 0) -> str:
        result = run_cli(*plan, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        assert "Traceback" not in output and "vault password 42" not in output
        return result.stdout

    run("init")
    backed_up = run("backup")
    assert "vault: Object Lock:" in backed_up and "(compliance, 1 days)" in backed_up

    def items() -> dict[str, dict[str, Any]]:
        card = json.loads(run_cli(*plan, "status", "--json", env=env).stdout)
        return {item["key"]: item for item in card["items"]}

    def findings() -> dict[str, dict[str, Any]]:
        result = run_cli(*plan, "watch", "--json", "--no-alerts", env=env)
        assert result.returncode == 2, result.stderr  # no drill yet: a warning is open anyway
        report = json.loads(result.stdout)
        return {finding["key"]: finding for finding in report["findings"]}

    assert items()["locks:vault"]["level"] == "pass"
    assert "locks:local" not in items()  # no Object Lock there: nothing to judge
    watched = findings()
    assert (
        watched["locks:vault"]["ok"] is True and "locked until" in watched["locks:vault"]["detail"]
    )
    metrics = run("metrics")
    assert 'safehold_object_lock_earliest_retain_until_seconds{app="shop"' in metrics

    # The policy grows to 10 days: what is stored is locked for 2 days only, until the next
    # backup extends it. status and watch say so, with the object and its date.
    _plan(app, s3_url, 10)
    below = items()["locks:vault"]
    assert below["level"] == "warn" and "below the policy's 10 days" in below["detail"]
    watched = findings()
    assert watched["locks:vault"]["ok"] is False
    assert watched["locks:vault"]["severity"] == "warning"
    assert "safehold lock status" in watched["locks:vault"]["fix"]
    status_text = run("lock", "status", code=1)
    assert "vault" in status_text and "BELOW POLICY" in status_text
    assert "shop/backups: no Object Lock (not S3 storage)" in status_text

    run("backup")  # reuses the packs and extends them to 10 days
    assert items()["locks:vault"]["level"] == "pass"
    assert findings()["locks:vault"]["ok"] is True
    listed = json.loads(run("lock", "status", "--json"))["destinations"]
    vault = next(row for row in listed if row["destination"] == "vault")
    assert vault["meets_policy"] is True and vault["mode"] == "COMPLIANCE"
    earliest = datetime.fromisoformat(vault["earliest_retain_until"])
    assert earliest >= datetime.now(UTC) + timedelta(days=10) - timedelta(minutes=5)
