"""A bucket as a source, against a real SeaweedFS on loopback (tests/s3server.py): objects
streamed into the snapshot with their metadata, incremental by ETag/size/LastModified,
restored into a new bucket or a folder, verified; the production guard; a CLI run with a
drill; `status` on an unversioned bucket."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from safehold.app.plan_backup import run_plan_backup
from safehold.app.restore import plan_restore, restore_source
from safehold.backends import LocalBackend
from safehold.errors import SafeholdError
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.sources.bucket import BucketAccess, BucketSource
from tests.conftest import RunCli
from tests.s3server import SeaweedServer

MIB = 1024 * 1024
SMALL = 300


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(1024, 8, 1))


def _fill(server: SeaweedServer, bucket: str, prefix: str = "media") -> dict[str, bytes]:
    client = server.client()
    client.create_bucket(Bucket=bucket)
    objects: dict[str, bytes] = {}
    for index in range(SMALL):
        body = f"upload {index}\n".encode() * (index % 7 + 1)
        key = f"{index % 10}/file-{index:04d}.txt"
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body,
                          ContentType="text/plain", Metadata={"owner": f"user{index}"})  # fmt: skip
        objects[key] = body
    for index, size in enumerate((3 * MIB + 17, 5 * MIB)):
        body = os.urandom(size)
        key = f"big/video-{index}.mp4"
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/{key}", Body=body, ContentType="video/mp4",
            CacheControl="max-age=3600", ContentDisposition=f'attachment; filename="v{index}.mp4"',
            Metadata={"uploaded-by": "alice", "checksum": hashlib.sha256(body).hexdigest()},
        )  # fmt: skip
        objects[key] = body
    client.put_object(Bucket=bucket, Key="elsewhere/not-mine.txt", Body=b"outside the prefix")
    return objects


def _source(server: SeaweedServer, bucket: str, prefix: str = "media") -> BucketSource:
    access = BucketAccess.parse(
        f"s3:{server.endpoint}/{bucket}/{prefix}",
        access_key_id=server.access_key, secret_access_key=server.secret_key,
    )  # fmt: skip
    return BucketSource("uploads", access, workers=8)


def _backup(repo: Repository, source: BucketSource) -> Any:
    result = run_plan_backup(repo, [source], app="shop", env="prod", reason="manual")
    assert not result.failed, result.failed
    return result


def _bucket_contents(server: SeaweedServer, bucket: str, prefix: str) -> dict[str, Any]:
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            head = client.get_object(Bucket=bucket, Key=entry["Key"])
            found[entry["Key"][len(prefix) :]] = (
                head["Body"].read(), head.get("ContentType"), head.get("Metadata"),
                head.get("CacheControl"), head.get("ContentDisposition"),
            )  # fmt: skip
    return found


def test_backup_is_incremental_and_restores_exactly(
    s3_server: SeaweedServer, repo: Repository, tmp_path: Path
) -> None:
    bucket = s3_server.bucket_name("up")
    objects = _fill(s3_server, bucket)
    source = _source(s3_server, bucket)

    first = _backup(repo, source)
    manifest = first.snapshot.safehold["sources"]["uploads"]
    assert manifest["count"] == len(objects) == SMALL + 2
    assert manifest["fetched"] == len(objects)
    big = manifest["objects"]["big/video-1.mp4"]
    assert big["content_type"] == "video/mp4" and big["metadata"]["uploaded-by"] == "alice"
    assert big["sha256"] == hashlib.sha256(objects["big/video-1.mp4"]).hexdigest()
    assert "elsewhere/not-mine.txt" not in manifest["objects"]

    # unchanged: nothing is fetched, every node is the parent's
    second = _backup(repo, _source(s3_server, bucket))
    assert second.snapshot.safehold["sources"]["uploads"]["fetched"] == 0
    assert second.stats.files_unmodified == len(objects) and second.stats.bytes_read == 0

    # one deleted, one overwritten: fetched again, the deleted one gone
    client = s3_server.client()
    client.delete_object(Bucket=bucket, Key="media/0/file-0000.txt")
    client.put_object(Bucket=bucket, Key="media/1/file-0001.txt", Body=b"new bytes",
                      ContentType="text/markdown")  # fmt: skip
    objects.pop("0/file-0000.txt")
    objects["1/file-0001.txt"] = b"new bytes"
    third = _backup(repo, _source(s3_server, bucket))
    third_manifest = third.snapshot.safehold["sources"]["uploads"]
    assert third_manifest["fetched"] == 1
    assert "0/file-0000.txt" not in third_manifest["objects"]
    assert third_manifest["objects"]["1/file-0001.txt"]["content_type"] == "text/markdown"

    # into a new bucket: bytes, content-type, metadata
    restored = s3_server.bucket_name("restored")
    report = restore_source(repo, third.snapshot, source, f"s3:{s3_server.endpoint}/{restored}/r")
    assert report.details["verified"] is True, report.warnings
    contents = _bucket_contents(s3_server, restored, "r/")
    assert {key: value[0] for key, value in contents.items()} == objects
    _body, content_type, metadata, cache, disposition = contents["big/video-0.mp4"]
    assert (content_type, cache) == ("video/mp4", "max-age=3600")
    assert disposition == 'attachment; filename="v0.mp4"'
    assert metadata["uploaded-by"] == "alice"
    assert contents["1/file-0001.txt"][1] == "text/markdown"
    assert contents["5/file-0005.txt"][2] == {"owner": "user5"}

    # into a folder: the objects as files
    folder = tmp_path / "restored"
    report = restore_source(repo, third.snapshot, source, str(folder))
    assert report.details["verified"] is True, report.warnings
    on_disk = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == objects


def test_production_guard_and_no_credentials_in_the_snapshot(
    s3_server: SeaweedServer, repo: Repository
) -> None:
    bucket = s3_server.bucket_name("guard")
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="media/a.txt", Body=b"a")
    source = _source(s3_server, bucket)
    snapshot = _backup(repo, source).snapshot
    raw = json.dumps(snapshot.safehold)
    assert s3_server.secret_key not in raw and s3_server.access_key not in raw
    for target, production in [
        (f"s3:{s3_server.endpoint}/{bucket}/media", True),
        (f"s3:{s3_server.endpoint}/{bucket}", True),
        (f"s3:{s3_server.endpoint}/{bucket}/media/sub", True),
        (f"s3:{s3_server.endpoint}/{bucket}/media-copy", False),
        (f"s3:{s3_server.endpoint}/other-{bucket}/media", False),
    ]:
        plan = plan_restore(repo, snapshot, source, target, app="shop", env="prod")
        assert plan.production is production, target
        assert plan.allowed is not production


def test_an_unreachable_bucket_fails_the_source_in_one_line(repo: Repository) -> None:
    access = BucketAccess.parse("s3:http://127.0.0.1:9/nothing", access_key_id="AKIASECRETID",
                                secret_access_key="verysecretvalue123")  # fmt: skip
    source = BucketSource("uploads", access)
    source.access = BucketAccess(access.location, "AKIASECRETID", "verysecretvalue123")
    with pytest.raises(SafeholdError) as caught:
        source.versioning()
    assert "verysecretvalue123" not in str(caught.value) + (caught.value.hint or "")


def _plan(tmp_path: Path, server: SeaweedServer, bucket: str) -> Path:
    plan = tmp_path / "safehold.toml"
    plan.write_text(f"""
app = "shop"
env = "prod"

[targets]
rpo = "24h"
rto = "1h"

[[sources]]
name = "uploads"
type = "bucket"
url = "s3:{server.endpoint}/{bucket}/media"
access_key_id = "${{UPLOADS_KEY}}"
secret_access_key = "${{UPLOADS_SECRET}}"

[[destinations]]
name = "local"
repository = "{tmp_path / "repo"}"
""")
    return plan


def test_cli_backup_restore_drill_and_status(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    bucket = s3_server.bucket_name("cli")
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for index in range(20):
        client.put_object(Bucket=bucket, Key=f"media/{index}.txt", Body=b"x" * index,
                          ContentType="text/plain")  # fmt: skip
    plan = _plan(tmp_path, s3_server, bucket)
    env = {"UPLOADS_KEY": s3_server.access_key, "UPLOADS_SECRET": s3_server.secret_key,
           "AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong-too"}  # fmt: skip
    outputs = []
    for args in (
        ["init", "--yes"], ["backup"], ["backup"],
        ["restore", "latest", "--source", "uploads", "--into",
         f"s3:{s3_server.endpoint}/{bucket}-copy"],
        ["restore", "latest", "--source", "uploads", "--into", str(tmp_path / "folder")],
        ["drill"],
    ):  # fmt: skip
        done = run_cli("--plan", str(plan), *args, env=env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        outputs.append(done.stdout + done.stderr)
    refused = run_cli("--plan", str(plan), "restore", "latest", "--source", "uploads", "--into",
                      f"s3:{s3_server.endpoint}/{bucket}/media", env=env)  # fmt: skip
    assert refused.returncode != 0 and "production" in refused.stderr
    assert len(list((tmp_path / "folder").iterdir())) == 20
    status = run_cli("--plan", str(plan), "status", env=env)
    assert "versioning" in status.stdout + status.stderr
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    versioned = run_cli("--plan", str(plan), "status", "--json", env=env)
    items = {item["key"]: item for item in json.loads(versioned.stdout)["items"]}
    assert items["bucket-versioning:uploads"]["level"] == "pass"
    for output in [*outputs, refused.stderr, status.stdout, versioned.stdout]:
        assert s3_server.secret_key not in output


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('url = "https://host/bkt"', 'expected an s3: location like "s3:https://'),
        ('url = "s3:https://host/bkt"\naccess_key_id = "k"', "access_key_id and secret_access_key"),
        ('url = "s3:https://host/bkt"\nworkers = 0', "sources[0].workers"),
    ],
)
def test_plan_errors_are_one_line(tmp_path: Path, lines: str, message: str) -> None:
    from safehold.plan import PlanError, parse_plan

    text = f"""app = "a"\nenv = "e"\n[targets]\nrpo = "1h"\nrto = "1h"\n
[[sources]]\nname = "up"\ntype = "bucket"\n{lines}\n
[[destinations]]\nname = "local"\nrepository = "r"\n"""
    with pytest.raises(PlanError) as caught:
        parse_plan(text, file=tmp_path / "safehold.toml", environ={})
    assert message in str(caught.value) and "\n" not in str(caught.value).strip()
