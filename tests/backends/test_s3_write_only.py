"""Write-only S3 keys (docs/offsite.md, "S3: two keys and a bucket policy"), on a real
SeaweedFS that enforces credentials and bucket policies.

The bucket gets exactly the policy docs/offsite.md shows (read from the file; only the account,
user names and bucket are substituted), granting the server's `backup` and `prune` identities,
which have no permission of their own. Proven here: the backup key runs init, backup, copy and
check and cannot delete, hide or shorten the retention of anything it stored; what it overwrites
keeps its original version; the prune key cannot delete a locked version before its retention
ends, and prunes it afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from safehold.backends.base import DeleteRefusedError
from safehold.backends.s3 import S3Backend
from tests.conftest import RunCli
from tests.s3server import SeaweedServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "offsite.md"
PREFIX = "prod"
OTHER_PASSWORD = "the local repository's own passphrase 9"
LOCK_DAY = {"SAFEHOLD_S3_OBJECT_LOCK": "governance:1"}


def documented_policy(server: SeaweedServer, bucket: str) -> dict[str, Any]:
    """The bucket policy from docs/offsite.md, for this server's identities and `bucket`."""
    text = DOCS.read_text()
    block = text.split("## S3: two keys and a bucket policy", 1)[1]
    block = block.split("```json\n", 1)[1].split("```", 1)[0]
    for old, new in (
        ("arn:aws:iam::123456789012:user/myapp-backup", server.principal_arn("backup")),
        ("arn:aws:iam::123456789012:user/myapp-prune", server.principal_arn("prune")),
        ("arn:aws:s3:::myapp-backups/prod/", f"arn:aws:s3:::{bucket}/{PREFIX}/"),
        ('arn:aws:s3:::myapp-backups"', f'arn:aws:s3:::{bucket}"'),
    ):
        assert old in block, old
        block = block.replace(old, new)
    assert "123456789012" not in block and "myapp" not in block
    policy: dict[str, Any] = json.loads(block)
    return policy


def _bucket(server: SeaweedServer, policy: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    """A bucket as its owner makes it: Object Lock on (and so versioning), the policy set."""
    bucket = server.bucket_name("wo")
    admin = server.client()
    admin.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    documented = documented_policy(server, bucket)
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy(documented)))
    return bucket


class Cli:
    """`safehold -r s3:.../bucket/prod ...` as one identity; asserts the exit code."""

    def __init__(
        self, run_cli: RunCli, server: SeaweedServer, bucket: str, identity: str,
        lock: dict[str, str] = LOCK_DAY,
    ) -> None:  # fmt: skip
        self.run_cli, self.secret = run_cli, server.credentials(identity)[1]
        self.location = f"s3:{server.endpoint}/{bucket}/{PREFIX}"
        self.env = {**server.env(identity), **lock}

    def __call__(
        self, *args: str | Path, expect: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = self.run_cli("-r", self.location, *map(str, args), env={**self.env, **(env or {})})
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output and self.secret not in output, output
        assert (proc.returncode == 0) == (expect == 0), f"{args}\n{output}"
        return proc


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(1_500_000))
    return src


def _denied(request: Callable[..., object], **arguments: Any) -> None:
    """The server answers `request(**arguments)` with AccessDenied."""
    with pytest.raises(ClientError) as caught:
        request(**arguments)
    assert caught.value.response["Error"]["Code"] == "AccessDenied", caught.value.response


def _versions(admin: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    listing = admin.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


def _objects(admin: Any, bucket: str) -> list[str]:
    listing = admin.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/")
    return [item["Key"] for item in listing.get("Contents", [])]


def _one_of_each(keys: list[str]) -> dict[str, str]:
    return {
        kind: next(key for key in keys if key.startswith(f"{PREFIX}/{kind}"))
        for kind in ("config", "keys/", "data/", "index/", "snapshots/")
    }


def test_the_backup_key_backs_up_and_copies_but_cannot_delete_or_overwrite(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    bucket = _bucket(s3_server, lambda policy: policy)
    cli = Cli(run_cli, s3_server, bucket, "backup")
    src = _source(tmp_path)
    assert "created repository" in cli("init").stdout
    cli("backup", src)
    local, other = tmp_path / "local", {"SAFEHOLD_PASSWORD": OTHER_PASSWORD}
    for args in (("init",), ("backup", str(src), "--note", "from elsewhere")):
        assert run_cli("-r", str(local), *args, env=other).returncode == 0
    cli("copy", "--from-repo", local, env={"SAFEHOLD_FROM_PASSWORD": OTHER_PASSWORD})
    assert len(json.loads(cli("snapshots", "--json").stdout)) == 2

    admin = s3_server.client()
    attacker = s3_server.client(*s3_server.credentials("backup"))
    keys = _objects(admin, bucket)
    assert not [key for key in keys if key.startswith(f"{PREFIX}/locks/")]  # it removed its own
    targets = _one_of_each(keys)
    original = {key: _versions(admin, bucket, key) for key in targets.values()}
    soon = datetime.now(UTC) + timedelta(seconds=5)
    for key, versions in original.items():
        assert len(versions) == 1
        version = versions[0]["VersionId"]
        assert admin.head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "GOVERNANCE"
        _denied(attacker.delete_object, Bucket=bucket, Key=key)  # not even a delete marker
        _denied(attacker.delete_object, Bucket=bucket, Key=key, VersionId=version)
        _denied(attacker.delete_object, Bucket=bucket, Key=key, VersionId=version,
                BypassGovernanceRetention=True)  # fmt: skip
        _denied(attacker.put_object_retention, Bucket=bucket, Key=key, VersionId=version,
                BypassGovernanceRetention=True,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})  # fmt: skip
    batch = attacker.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": key, **({"VersionId": versions[0]["VersionId"]} if number % 2 else {})}
        for number, (key, versions) in enumerate(original.items())
    ]})  # fmt: skip
    assert not batch.get("Deleted")
    assert {error["Code"] for error in batch["Errors"]} == {"AccessDenied"}
    assert len(batch["Errors"]) == len(original)
    _denied(attacker.put_bucket_policy, Bucket=bucket,
            Policy=json.dumps({"Version": "2012-10-17", "Statement": []}))  # fmt: skip
    _denied(attacker.delete_bucket_policy, Bucket=bucket)
    _denied(attacker.put_bucket_lifecycle_configuration, Bucket=bucket,
            LifecycleConfiguration={"Rules": [{
                "ID": "expire", "Status": "Enabled", "Filter": {"Prefix": ""},
                "Expiration": {"Days": 1}}]})  # fmt: skip
    _denied(attacker.put_bucket_versioning, Bucket=bucket,
            VersioningConfiguration={"Status": "Suspended"})  # fmt: skip

    # an overwrite cannot be refused on S3: it adds a version, the original stays untouched
    pack = targets["data/"]
    pack_version = original[pack][0]["VersionId"]
    pack_bytes = admin.get_object(Bucket=bucket, Key=pack)["Body"].read()
    attacker.put_object(Bucket=bucket, Key=pack, Body=b"garbage")
    kept = admin.get_object(Bucket=bucket, Key=pack, VersionId=pack_version)["Body"].read()
    assert kept == pack_bytes
    _denied(attacker.delete_object, Bucket=bucket, Key=pack, VersionId=pack_version)
    for key, versions in original.items():  # every original version is still there
        now = {(v["VersionId"], v["ETag"], v["Size"]) for v in _versions(admin, bucket, key)}
        assert (versions[0]["VersionId"], versions[0]["ETag"], versions[0]["Size"]) in now
    damaged = cli("check", "--read-data", expect=1)
    assert f"pack {pack.rsplit('/', 1)[1][:8]} is corrupt" in damaged.stderr
    # the administrator makes the original current again
    source = {"Bucket": bucket, "Key": pack, "VersionId": pack_version}
    admin.copy_object(Bucket=bucket, Key=pack, CopySource=source)
    assert "no errors were found" in cli("check", "--read-data").stdout


def test_locked_objects_survive_the_prune_key_until_their_retention_ends(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    bucket = _bucket(s3_server, lambda policy: policy)
    backup = Cli(run_cli, s3_server, bucket, "backup")
    prune = Cli(run_cli, s3_server, bucket, "prune")
    src = _source(tmp_path)
    backup("init")
    backup("backup", src)
    (src / "sub" / "big.bin").write_bytes(os.urandom(1_500_000))  # the first one's data goes
    backup("backup", src)
    first = min(json.loads(backup("snapshots", "--json").stdout), key=lambda s: s["time"])["id"]

    admin = s3_server.client()
    pruner = s3_server.client(*s3_server.credentials("prune"))
    before = set(_objects(admin, bucket))
    kept = prune("forget", "--keep-last", "1", "--force", "--prune").stdout
    assert "kept (under retention)" in kept and "locked until" in kept
    assert set(_objects(admin, bucket)) >= before  # nothing was deleted
    soon = datetime.now(UTC) + timedelta(seconds=5)
    for key in _one_of_each(sorted(before)).values():
        version = _versions(admin, bucket, key)[0]["VersionId"]
        _denied(pruner.delete_object, Bucket=bucket, Key=key, VersionId=version)
        _denied(pruner.delete_object, Bucket=bucket, Key=key, VersionId=version,
                BypassGovernanceRetention=True)  # fmt: skip
        _denied(pruner.put_object_retention, Bucket=bucket, Key=key, VersionId=version,
                BypassGovernanceRetention=True,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})  # fmt: skip
    # a delete without a version id only hides the object behind a marker: the data stays
    snapshot = f"{PREFIX}/snapshots/{first}"
    version = _versions(admin, bucket, snapshot)[0]["VersionId"]
    marker = pruner.delete_object(Bucket=bucket, Key=snapshot)
    assert marker["DeleteMarker"]
    assert admin.get_object(Bucket=bucket, Key=snapshot, VersionId=version)["Body"].read()
    pruner.delete_object(Bucket=bucket, Key=snapshot, VersionId=marker["VersionId"])
    assert admin.head_object(Bucket=bucket, Key=snapshot)["VersionId"] == version

    # the retention ends: the administrator (who may bypass governance) brings it forward
    ends = datetime.now(UTC) + timedelta(seconds=2)
    for key in _objects(admin, bucket):
        for item in _versions(admin, bucket, key):
            if admin.head_object(Bucket=bucket, Key=key, VersionId=item["VersionId"]).get(
                "ObjectLockMode"
            ):
                admin.put_object_retention(
                    Bucket=bucket, Key=key, VersionId=item["VersionId"],
                    BypassGovernanceRetention=True,
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": ends},
                )  # fmt: skip
    time.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()) + 0.5)
    done = prune("forget", "--keep-last", "1", "--force", "--prune").stdout
    assert "kept (under retention)" not in done
    assert len(json.loads(prune("snapshots", "--json").stdout)) == 1
    assert _versions(admin, bucket, snapshot) == []  # every version gone, not just hidden
    gone = {key for key in before - set(_objects(admin, bucket)) if "/data/" in key}
    assert gone and all(_versions(admin, bucket, key) == [] for key in gone)
    assert "no errors were found" in backup("check", "--read-data").stdout


def test_a_backup_key_that_may_delete_nothing_leaves_its_locks(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    def without_lock_deletes(policy: dict[str, Any]) -> dict[str, Any]:
        statements = policy["Statement"]
        policy["Statement"] = [s for s in statements if s["Sid"] != "BackupDeletesOnlyItsLockFiles"]
        assert len(policy["Statement"]) == len(statements) - 1
        return policy

    bucket = _bucket(s3_server, without_lock_deletes)
    backup = Cli(run_cli, s3_server, bucket, "backup", lock={})  # no retention: see below
    src = _source(tmp_path)
    backup("init")
    backup("backup", src)
    backup("backup", src)  # the first one's lock is still there: stale, its process has ended
    admin = s3_server.client()
    locks = [key for key in _objects(admin, bucket) if key.startswith(f"{PREFIX}/locks/")]
    assert len(locks) == 2
    attacker = s3_server.client(*s3_server.credentials("backup"))
    _denied(attacker.delete_object, Bucket=bucket, Key=locks[0])
    # anything else it may not delete (no retention here) is a clear refusal, not a lock
    snapshot = "snapshots/" + json.loads(backup("snapshots", "--json").stdout)[0]["id"]
    backend = S3Backend(backup.location, credentials=s3_server.credentials("backup"))
    with pytest.raises(DeleteRefusedError, match="S3 denied delete"):
        backend.delete(snapshot)
    assert backend.stat(snapshot).size > 0
    refused = backup("unlock", "--remove-all")  # the backup login: counted honestly
    assert "removed 0 lock(s)" in refused.stdout
    assert "2 lock(s) could not be deleted with these credentials" in refused.stderr
    assert "removed 2 lock(s)" in Cli(run_cli, s3_server, bucket, "prune")("unlock").stdout
    assert not [key for key in _objects(admin, bucket) if key.startswith(f"{PREFIX}/locks/")]
