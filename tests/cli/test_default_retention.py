"""Buckets with a default Object Lock retention (issue 14, part 2), on a real S3 server.

Most providers (and the AWS docs) set Object Lock up with a bucket default retention that
covers every new object, lock files included. backup, copy, check, forget and prune must all
work there (exit 0, as restic does), lock files must not be left undeletable, and nothing the
retention protects may be deleted."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.errors import SafeholdWarning
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
