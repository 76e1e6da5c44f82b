"""Buckets with a default Object Lock retention (issue 14, part 2), on a real S3 server.

Most providers (and the AWS docs) set Object Lock up with a bucket default retention that
covers every new object, lock files included. backup, copy, check, forget and prune must all
work there (exit 0, as restic does), lock files must not be left undeletable, and nothing the
retention protects may be deleted."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.errors import SafeholdWarning
from safehold.repo.objectlock import kept_objects
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer


def _bucket_with_default_retention(server: SeaweedServer, mode: str) -> str:
    bucket = server.bucket_name("default")
    client = server.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": mode, "Days": 1}},
        },
    )
    return bucket


def _keys(server: SeaweedServer, bucket: str) -> set[str]:
    listed = server.client().list_object_versions(Bucket=bucket)
    return {version["Key"] for version in listed.get("Versions", [])}


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_every_command_works_in_a_bucket_with_a_default_retention(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path, mode: str
) -> None:
    bucket = _bucket_with_default_retention(s3_server, mode)
    location = f"s3:{s3_server.endpoint}/{bucket}/app"
    local = str(tmp_path / "local")
    env: dict[str, Any] = {**s3_server.env(), "SAFEHOLD_FROM_PASSWORD": TEST_PASSWORD,
                           "SAFEHOLD_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip

    def run(*args: str, repo: str = location) -> str:
        result = run_cli("-r", repo, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output and s3_server.secret_key not in output
        return output

    source = tmp_path / "src"
    source.mkdir()
    run("init")
    run("init", repo=local)
    for number in range(3):
        (source / f"file{number}.bin").write_bytes(os.urandom(200_000))
        run("backup", str(source))
        run("backup", str(source), repo=local)
    run("copy", "--from-repo", local)
    run("check", "--read-data")
    stored = _keys(s3_server, bucket)
    assert not any(key.startswith("app/locks/") for key in stored)  # every lock went away
    before = {key for key in stored if not key.startswith("app/locks/")}
    client = s3_server.client()
    for key in before:  # the bucket's default locked everything safehold wrote
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == mode, key

    snapshots = json.loads(run_cli("-r", location, "snapshots", "--json", env=env).stdout)
    assert len(snapshots) == 6
    forgotten = run("forget", "--keep-last", "1", "--prune")
    assert "kept (under retention)" in forgotten
    run("prune")
    run("check")
    after = {key for key in _keys(s3_server, bucket) if not key.startswith("app/locks/")}
    assert before <= after  # nothing the default retention protects was deleted
    assert not any(key.startswith("app/locks/") for key in _keys(s3_server, bucket))


def test_a_lock_file_that_stays_locked_is_left_to_go_stale_with_a_warning(
    s3_server: SeaweedServer,
) -> None:
    """A provider that ignores the short retention on a lock file (here: a lock written
    without it, so the bucket's COMPLIANCE default covers it for a day): delete warns and
    returns, it never fails the command; other objects under retention still raise."""
    bucket = _bucket_with_default_retention(s3_server, "COMPLIANCE")
    backend = s3_server.backend(bucket, "app")
    client = s3_server.client()
    name = "locks/" + "ab" * 32
    client.put_object(Bucket=bucket, Key=f"app/{name}", Body=b"lock")
    with pytest.warns(SafeholdWarning, match="left to go stale"):
        backend.delete(name)
    assert [info.name for info in backend.list("locks/")] == [name]

    backend.put(name.replace("ab", "cd"), b"lock")  # written by safehold: a few seconds
    until = backend.retention_until(name.replace("ab", "cd"))
    assert until is not None and (until - datetime.now(UTC)).total_seconds() < 30
    backend.delete(name.replace("ab", "cd"))  # its GOVERNANCE seconds bypassed or waited out
    assert [info.name for info in backend.list("locks/")] == [name]


def test_a_policy_on_a_default_retention_bucket_extends_what_the_default_locked(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """A bucket with a default COMPLIANCE retention of 1 day, and then a policy of 3 days: the
    objects the bucket's default locked for one day are pushed to 3 days by the next backup,
    every pack of the newest snapshot is locked at least 3 days from now, and copy, check,
    forget and prune exit 0 without deleting anything that is locked."""
    bucket = _bucket_with_default_retention(s3_server, "COMPLIANCE")
    location = f"s3:{s3_server.endpoint}/{bucket}/app"
    local = str(tmp_path / "local")
    plain: dict[str, Any] = {**s3_server.env(), "SAFEHOLD_FROM_PASSWORD": TEST_PASSWORD,
                             "SAFEHOLD_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    policy = {**plain, "SAFEHOLD_S3_OBJECT_LOCK": "compliance:3"}

    def run(*args: str, env: dict[str, Any], repo: str = location) -> str:
        result = run_cli("-r", repo, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output and s3_server.secret_key not in output
        return result.stdout

    client = s3_server.client()

    def until(key: str) -> datetime:
        head = client.head_object(Bucket=bucket, Key=f"app/{key}")
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        value: datetime = head["ObjectLockRetainUntilDate"]
        return value

    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(700_000))
    (source / "same.txt").write_text("unchanged\n")
    run("init", env=plain)
    run("init", env=plain, repo=local)
    first = json.loads(run("backup", str(source), "--json", env=plain))
    assert first["object_lock"] is None  # no policy yet: only the bucket's default locks
    repo = Repository.open(s3_server.backend(bucket, "app"), TEST_PASSWORD.encode())
    first_packs = {n for n in kept_objects(repo, repo.list_snapshots()) if n.startswith("data/")}
    assert first_packs
    for name in first_packs:  # the bucket's one day, nothing more
        assert until(name) < datetime.now(UTC) + timedelta(days=1, hours=1), name

    before = datetime.now(UTC)
    second = json.loads(run("backup", str(source), "--json", env=policy))
    assert second["object_lock"]["failed"] == [] and second["object_lock"]["extended"] > 0
    repo = Repository.open(s3_server.backend(bucket, "app"), TEST_PASSWORD.encode())
    newest = kept_objects(repo, [repo.find_snapshot(second["snapshot_id"])])
    packs = {name for name in newest if name.startswith("data/")}
    assert first_packs & packs  # the unchanged file's packs were reused, then extended
    for name in newest:
        assert until(name) >= before + timedelta(days=3), name

    (source / "more.bin").write_bytes(os.urandom(200_000))
    run("backup", str(source), env=plain, repo=local)
    run("copy", "--from-repo", local, env=policy)
    run("check", "--read-data", env=policy)
    stored = _keys(s3_server, bucket)
    before_forget = {key for key in stored if not key.startswith("app/locks/")}
    forgotten = run("forget", "--keep-last", "1", "--prune", env=policy)
    assert "kept (under retention)" in forgotten
    run("prune", env=policy)
    run("check", env=policy)
    after = _keys(s3_server, bucket)
    assert before_forget <= after  # COMPLIANCE: nothing locked was deleted
    assert not any(key.startswith("app/locks/") for key in after)
    status = json.loads(run("lock", "status", "--json", env=policy))["destinations"][0]
    assert status["meets_policy"] is True and status["mode"] == "COMPLIANCE"
