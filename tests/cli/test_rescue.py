"""`safehold rescue --as-of TIME` undoes a delete attack (issue 14, part 4), on a real SeaweedFS
with versioning, without Object Lock, and with credentials enforced.

The attacker holds the production (backup) key, which a sloppy bucket policy lets delete and
overwrite objects, but not delete versions. They overwrite the config, a pack, an index and a
snapshot with junk, add a fake snapshot, then delete every object of the repository. Then the
repository does not open at all. `safehold rescue --as-of <before the attack>` run by the
bucket owner brings it back: --dry-run lists it all and changes nothing; the real run leaves
the current objects byte for byte as they were, `check --read-data` passes, and both snapshots
restore bit-exact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer

PREFIX = "prod"


def _sloppy_policy(server: SeaweedServer, bucket: str) -> dict[str, Any]:
    """The backup key may read, write and delete objects (a delete only adds a marker in a
    versioned bucket), and delete versions only of its lock files."""
    principal = {"AWS": server.principal_arn("backup")}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": principal,
             "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Effect": "Allow", "Principal": principal,
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                        "s3:AbortMultipartUpload"],
             "Resource": f"arn:aws:s3:::{bucket}/{PREFIX}/*"},
            {"Effect": "Allow", "Principal": principal,
             "Action": ["s3:DeleteObjectVersion"],
             "Resource": f"arn:aws:s3:::{bucket}/{PREFIX}/locks/*"},
        ],
    }  # fmt: skip


def _current(admin: Any, bucket: str) -> dict[str, str]:
    """Every current object below the prefix: key -> SHA-256 of its bytes."""
    found = {}
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Contents", []):
            body = admin.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"]] = hashlib.sha256(body).hexdigest()
    return found


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class Cli:
    def __init__(self, run_cli: RunCli, location: str, env: dict[str, str], secrets: list[str]):
        self.run_cli, self.location, self.env, self.secrets = run_cli, location, env, secrets

    def __call__(
        self, *args: str, expect: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = self.run_cli("-r", self.location, *args, env={**self.env, **(env or {})})
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        for secret in self.secrets:
            assert secret not in output
        assert result.returncode == expect, f"{args}: exit {result.returncode}\n{output}"
        return result


def test_rescue_undoes_a_delete_attack_on_a_versioned_bucket(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    admin = s3_server.client()
    bucket = s3_server.bucket_name("rescue")
    admin.create_bucket(Bucket=bucket)
    admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(_sloppy_policy(s3_server, bucket)))
    location = f"s3:{s3_server.endpoint}/{bucket}/{PREFIX}"
    backup_key, backup_secret = s3_server.credentials("backup")
    secrets = [backup_secret, s3_server.secret_key, TEST_PASSWORD]
    production = Cli(run_cli, location, s3_server.env("backup"), secrets)
    owner = Cli(run_cli, location, s3_server.env(), secrets)

    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "sub" / "big.bin").write_bytes(os.urandom(1_200_000))
    production("init")
    production("backup", str(source))
    first_tree = _digest(source)
    (source / "b.txt").write_text("bravo\n")
    (source / "sub" / "big.bin").write_bytes(os.urandom(900_000))
    production("backup", str(source))
    second_tree = _digest(source)
    good = _current(admin, bucket)
    assert any(key.startswith(f"{PREFIX}/data/") for key in good)

    time.sleep(1.5)  # S3 times are whole seconds
    before = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.5)

    # the attack, with the production key: overwrite some, add a fake snapshot, delete all
    attacker = s3_server.client(backup_key, backup_secret)
    overwritten = [
        f"{PREFIX}/config",
        next(k for k in good if k.startswith(f"{PREFIX}/data/")),
        next(k for k in good if k.startswith(f"{PREFIX}/index/")),
        next(k for k in good if k.startswith(f"{PREFIX}/snapshots/")),
    ]
    for key in overwritten:
        attacker.put_object(Bucket=bucket, Key=key, Body=b"encrypted by the attacker")
    fake = f"{PREFIX}/snapshots/{'f' * 64}"
    attacker.put_object(Bucket=bucket, Key=fake, Body=b"not a snapshot")
    for key in [*good, fake]:
        attacker.delete_object(Bucket=bucket, Key=key)
    junk = f"{PREFIX}/data/ee/{'e' * 64}"  # written after the time: rescue hides it
    attacker.put_object(Bucket=bucket, Key=junk, Body=b"junk")
    # what the sloppy policy still refuses: deleting a version for good
    versions = admin.list_object_versions(Bucket=bucket, Prefix=f"{PREFIX}/config")["Versions"]
    with pytest.raises(ClientError) as caught:
        attacker.delete_object(
            Bucket=bucket, Key=f"{PREFIX}/config", VersionId=versions[-1]["VersionId"]
        )
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert list(_current(admin, bucket)) == [junk]
    owner("snapshots", expect=10)  # nothing left to open

    # refusals: no --yes, a time in the future, a time that is no time
    refused = owner("rescue", "--as-of", before.isoformat(), expect=1)
    assert "--dry-run" in refused.stderr and "--yes" in refused.stderr
    future = owner("rescue", "--as-of", "2999-01-01T00:00:00Z", "--yes", expect=1)
    assert "is in the future" in future.stderr
    nonsense = owner("rescue", "--as-of", "yesterday", "--yes", expect=1)
    assert "--as-of" in nonsense.stderr and "-2h" in nonsense.stderr

    # the dry run lists every object and changes nothing
    dry = json.loads(owner("rescue", "--as-of", before.isoformat(), "--dry-run", "--json").stdout)
    actions = {step["name"]: step["action"] for step in dry["steps"]}
    named = {f"{PREFIX}/{name}": action for name, action in actions.items()}
    for key in good:
        if key in overwritten:
            assert named[key] == "put-back", key
        elif not key.startswith(f"{PREFIX}/locks/"):
            assert named[key] == "unhide", key
    assert fake not in named  # absent then, deleted now: nothing to do
    assert named[junk] == "hide"
    assert dry["dry_run"] is True
    assert list(_current(admin, bucket)) == [junk]
    text = owner("rescue", "--as-of", before.isoformat(), "--dry-run").stdout
    assert "to undelete" in text and "put back config" in text and "dry run" in text

    # the rescue: every object as it was, byte for byte, and the repository checks clean
    done = owner("rescue", "--as-of", before.isoformat(), "--yes")
    assert "check --read-data: 2 snapshots" in done.stdout, done.stdout
    assert "no errors were found" in done.stdout
    assert _current(admin, bucket) == good
    again = owner("rescue", "--as-of", before.isoformat(), "--dry-run")
    assert "nothing to do" in again.stdout

    assert "no errors were found" in production("check", "--read-data").stdout
    snapshots = json.loads(production("snapshots", "--json").stdout)
    assert len(snapshots) == 2
    for snapshot, tree in zip(snapshots, (first_tree, second_tree), strict=True):
        target = tmp_path / f"restored-{snapshot['id'][:8]}"
        production("restore", snapshot["id"], "--target", str(target))
        restored = next(target.rglob("a.txt")).parent
        assert _digest(restored) == tree
    production("backup", str(source))  # and backups go on


def test_rescue_is_refused_where_it_cannot_work(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    admin = s3_server.client()
    bucket = s3_server.bucket_name("plain")
    admin.create_bucket(Bucket=bucket)  # no versioning
    location = f"s3:{s3_server.endpoint}/{bucket}/{PREFIX}"
    env = s3_server.env()
    assert run_cli("-r", location, "init", env=env).returncode == 0
    result = run_cli("-r", location, "rescue", "--as-of", "-1m", "--dry-run", env=env)
    assert result.returncode == 1 and "has no versioning" in result.stderr, result.stderr
    assert "another destination" in result.stderr and "Traceback" not in result.stderr

    local = tmp_path / "repo"
    assert run_cli("-r", str(local), "init").returncode == 0
    result = run_cli("-r", str(local), "rescue", "--as-of", "-1m", "--dry-run")
    assert result.returncode == 1 and "versioned S3 bucket" in result.stderr, result.stderr
    result = run_cli("-r", str(local), "rescue", "--dest", "x", "--as-of", "-1m", "--dry-run")
    assert result.returncode == 1 and "not both" in result.stderr, result.stderr
    result = run_cli("rescue", "--dest", "x", "--as-of", "-1m", "--dry-run")
    assert result.returncode == 1 and "there is no plan" in result.stderr, result.stderr

    # through a plan: --dest names the destination; its type decides
    (tmp_path / "safehold.toml").write_text(
        'app = "a"\nenv = "b"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "f"\ntype = "files"\npaths = ["."]\n'
        f'[[destinations]]\nname = "local"\nrepository = "{local}"\n'
    )
    plan = ["--plan", str(tmp_path / "safehold.toml")]
    result = run_cli(*plan, "rescue", "--dest", "local", "--as-of", "-1m", "--dry-run")
    assert result.returncode == 1 and "versioned S3 bucket" in result.stderr, result.stderr
    result = run_cli(*plan, "rescue", "--dest", "nope", "--as-of", "-1m", "--dry-run")
    assert result.returncode == 1 and "no destination named 'nope'" in result.stderr


def test_rescue_reports_a_check_that_cannot_run(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """A fresh lock is warned about (a backup may be running); a wrong password: the objects
    are back all the same, the failed check is named, exit 1."""
    admin = s3_server.client()
    bucket = s3_server.bucket_name("rescuepw")
    admin.create_bucket(Bucket=bucket)
    admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    location = f"s3:{s3_server.endpoint}/{bucket}/{PREFIX}"
    owner = Cli(run_cli, location, s3_server.env(), [s3_server.secret_key, TEST_PASSWORD])
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("x\n")
    owner("init")
    owner("backup", str(tmp_path / "src"))
    good = _current(admin, bucket)
    time.sleep(1.5)
    before = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.5)
    for key in good:
        admin.delete_object(Bucket=bucket, Key=key)
    admin.put_object(Bucket=bucket, Key=f"{PREFIX}/locks/{'a' * 64}", Body=b"a fresh lock")
    dry = owner("rescue", "--as-of", before.isoformat(), "--dry-run")
    assert "1 lock(s) younger than 30 minutes" in dry.stderr and "stop it" in dry.stderr
    result = owner("rescue", "--as-of", before.isoformat(), "--yes", expect=1,
                   env={"SAFEHOLD_PASSWORD": "not the password"})  # fmt: skip
    steps = len(good) + 1  # and the lock written since: hidden
    assert f"rescued: {steps} of {steps} object(s) changed" in result.stdout
    assert "the check could not run" in result.stderr and "password" in result.stderr
    assert _current(admin, bucket) == good
    assert "no errors were found" in owner("check", "--read-data").stdout
