"""S3Backend beyond the conformance suite: location strings, multipart, Object Lock, errors.

Runs against a real SeaweedFS server on loopback (`tests.s3server`), which enforces credentials
and Object Lock (COMPLIANCE and GOVERNANCE)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import IncompleteReadError

from safehold.backends import open_backend
from safehold.backends.base import Capabilities, ObjectNotFoundError
from safehold.backends.s3 import S3Backend, S3Location, parse_s3_location
from safehold.errors import BackendError, BackendPermissionError, UsageError
from tests.conftest import RunCli
from tests.s3server import SeaweedServer
from tests.servers import free_port

PACK = "ab" + "cd" * 31

# ----- location strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected", "display"),
    [
        ("s3:https://minio.example.com:9000/backups/host1",
         S3Location("https://minio.example.com:9000", "backups", "host1"),
         "s3:https://minio.example.com:9000/backups/host1"),
        ("s3:http://127.0.0.1:8333/bucket",
         S3Location("http://127.0.0.1:8333", "bucket", ""), "s3:http://127.0.0.1:8333/bucket"),
        ("s3:http://127.0.0.1:8333/bucket/a/b/",
         S3Location("http://127.0.0.1:8333", "bucket", "a/b"),
         "s3:http://127.0.0.1:8333/bucket/a/b"),
        ("s3:s3.amazonaws.com/my-bucket/restic", S3Location(None, "my-bucket", "restic"),
         "s3:s3.amazonaws.com/my-bucket/restic"),
        ("s3:https://s3.amazonaws.com/my-bucket", S3Location(None, "my-bucket", ""),
         "s3:s3.amazonaws.com/my-bucket"),
        ("s3:s3.eu-central-1.amazonaws.com/b-1/x",
         S3Location(None, "b-1", "x", "eu-central-1"), "s3:s3.eu-central-1.amazonaws.com/b-1/x"),
        ("s3:storage.example.net/bucket/p",
         S3Location("https://storage.example.net", "bucket", "p"),
         "s3:https://storage.example.net/bucket/p"),
    ],
)  # fmt: skip
def test_location_strings(location: str, expected: S3Location, display: str) -> None:
    parsed = parse_s3_location(location)
    assert parsed == expected
    assert parsed.display == display
    backend = open_backend(location)  # no request is made before first use
    assert isinstance(backend, S3Backend)
    assert backend.location == display


@pytest.mark.parametrize(
    "location",
    ["s3:", "s3:https://host:9000", "s3:https://host:9000/", "s3:ftp://host/bucket",
     "s3:https://host/bucket?x=1", "s3:https://host/Bad_Bucket!", "s3:https://host/b/../x"],
)  # fmt: skip
def test_bad_locations_are_usage_errors(location: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_backend(location)
    assert caught.value.hint


def test_credentials_in_a_location_are_refused_and_never_echoed() -> None:
    with pytest.raises(UsageError) as caught:
        open_backend("s3:https://AKIAKEY:supersecret@host/bucket")
    assert "supersecret" not in caught.value.message + caught.value.hint
    assert "AWS_ACCESS_KEY_ID" in caught.value.hint


def test_lock_mode_is_checked() -> None:
    with pytest.raises(UsageError):
        S3Backend("s3:http://h/b", lock_retention=("FOREVER", 1))  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        S3Backend("s3:http://h/b", lock_retention=("COMPLIANCE", 0))


def test_object_lock_is_declared_as_a_capability() -> None:
    keys = ("AKIDEXAMPLE", "secret-example")
    locked = S3Backend("s3:http://h/bucket", lock_retention=("COMPLIANCE", 1), credentials=keys)
    plain = S3Backend("s3:http://h/bucket", credentials=keys)
    assert locked.capabilities == Capabilities(object_lock=True, forkable=True)
    assert plain.capabilities == Capabilities(forkable=True)


# ----- against the server -----------------------------------------------------------------


def test_credentials_come_from_the_environment(
    s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = s3_server.bucket_name("env")
    backend = open_backend(f"s3:{s3_server.endpoint}/{bucket}/some/prefix")
    assert not backend.exists()
    backend.create()
    backend.put("config", b"c")
    backend.put(f"data/ab/{PACK}", [b"pi", b"ec", b"es"])
    assert backend.get(f"data/ab/{PACK}") == b"pieces"
    keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["some/prefix/config", f"some/prefix/data/ab/{PACK}"]  # restic's layout
    assert [info.name for info in backend.list("")] == ["config", f"data/ab/{PACK}"]


def test_multipart_upload_above_the_threshold(s3_server: SeaweedServer) -> None:
    bucket = s3_server.bucket_name("mp")
    backend = s3_server.backend(bucket, "r", multipart_threshold=1024 * 1024, part_size=1)
    backend.create()
    assert backend.part_size == 5 * 1024 * 1024  # raised to S3's minimum part size
    pieces = [os.urandom(3 * 1024 * 1024 + 17), os.urandom(7 * 1024 * 1024), os.urandom(999)]
    backend.put(f"data/ab/{PACK}", pieces)
    data = b"".join(pieces)
    assert backend.get(f"data/ab/{PACK}") == data
    assert backend.get_range(f"data/ab/{PACK}", 5 * 1024 * 1024 - 3, 6) == data[5242877:5242883]
    client = s3_server.client()
    head = client.head_object(Bucket=bucket, Key=f"r/data/ab/{PACK}")
    assert head["ETag"].strip('"').endswith("-3")  # 5 MiB + 5 MiB + the rest
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    backend.put("config", b"small")  # below the threshold: one PutObject
    assert "-" not in client.head_object(Bucket=bucket, Key="r/config")["ETag"]


def test_failed_multipart_upload_is_aborted(s3_server: SeaweedServer) -> None:
    bucket = s3_server.bucket_name("mpfail")
    backend = s3_server.backend(bucket, multipart_threshold=1024)
    backend.create()

    def pieces() -> Any:
        yield b"x" * (6 * 1024 * 1024)
        raise OSError("source vanished")

    class Pieces(list[bytes]):
        def __iter__(self) -> Any:
            return pieces()

    with pytest.raises(OSError):
        backend.put(f"data/ab/{PACK}", Pieces([b"x" * (6 * 1024 * 1024)]))
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ObjectNotFoundError):
        backend.stat(f"data/ab/{PACK}")


def test_object_lock_retention(s3_server: SeaweedServer) -> None:
    bucket = s3_server.bucket_name("lock")
    backend = s3_server.backend(bucket, "repo", lock_retention=("COMPLIANCE", 1))
    backend.create()  # creates the bucket with Object Lock enabled
    client = s3_server.client()
    lock_config = client.get_object_lock_configuration(Bucket=bucket)
    assert lock_config["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"

    before = datetime.now(UTC)
    for name in ("config", f"data/ab/{PACK}", f"snapshots/{PACK}", f"locks/{PACK}"):
        backend.put(name, b"payload " + name.encode())
    for name in ("config", f"data/ab/{PACK}", f"snapshots/{PACK}"):
        until = backend.retention_until(name)
        assert until is not None
        # the policy's day plus lock_slack(1) (a day): still locked for a day tomorrow
        assert before + timedelta(days=2) - timedelta(seconds=5) <= until
        assert until <= datetime.now(UTC) + timedelta(days=2, seconds=5)
        head = client.head_object(Bucket=bucket, Key=f"repo/{name}")
        assert head["ObjectLockMode"] == "COMPLIANCE"
    assert backend.retention_until(f"locks/{PACK}") is None  # lock files stay deletable
    with pytest.raises(ObjectNotFoundError):
        backend.retention_until(f"keys/{PACK}")

    # The server refuses to delete a locked object, and the error says until when.
    with pytest.raises(BackendPermissionError) as caught:
        backend.delete(f"data/ab/{PACK}")
    message = caught.value.message
    assert "locked until" in message and f"data/ab/{PACK}" in message
    assert (before + timedelta(days=2)).strftime("%Y-%m-%d") in message
    assert caught.value.hint
    assert backend.get(f"data/ab/{PACK}") == f"payload data/ab/{PACK}".encode()

    # A lock file is really removed: no version is left behind a delete marker.
    backend.delete(f"locks/{PACK}")
    backend.delete(f"locks/{PACK}")
    assert [info.name for info in backend.list("locks/")] == []
    versions = client.list_object_versions(Bucket=bucket, Prefix="repo/locks/")
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []


def test_locked_object_is_deletable_after_its_retention(s3_server: SeaweedServer) -> None:
    bucket = s3_server.bucket_name("expiry")
    backend = s3_server.backend(bucket, lock_retention=("GOVERNANCE", 2 / 86400))  # 2 seconds
    backend.create()
    backend.put(f"index/{PACK}", b"index")
    until = backend.retention_until(f"index/{PACK}")
    assert until is not None
    with pytest.raises(BackendPermissionError, match="locked until"):
        backend.delete(f"index/{PACK}")
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.2)
    backend.delete(f"index/{PACK}")
    with pytest.raises(ObjectNotFoundError):
        backend.get(f"index/{PACK}")


def test_retention_on_a_bucket_without_object_lock_is_refused(s3_server: SeaweedServer) -> None:
    bucket = s3_server.bucket_name("nolock")
    s3_server.client().create_bucket(Bucket=bucket)
    backend = s3_server.backend(bucket, lock_retention=("COMPLIANCE", 1))
    with pytest.raises(BackendError, match="no Object Lock") as caught:
        backend.create()
    assert "Object Lock" in caught.value.hint
    with pytest.raises(BackendError, match="refused object lock retention"):
        backend.put("config", b"c")
    plain = s3_server.backend(bucket)
    plain.put("config", b"c")
    assert plain.retention_until("config") is None


def test_missing_bucket(s3_server: SeaweedServer) -> None:
    backend = s3_server.backend(s3_server.bucket_name("missing"), "p")
    assert not backend.exists()
    with pytest.raises(BackendError, match="does not exist") as caught:
        backend.get("config")
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert "bucket" in caught.value.hint
    with pytest.raises(BackendError, match="does not exist"):
        list(backend.list("keys/"))


def test_wrong_credentials_are_a_permission_error(s3_server: SeaweedServer) -> None:
    bucket = s3_server.bucket_name("creds")
    good = s3_server.backend(bucket, "repo")
    good.create()
    good.put("config", b"c")
    bad = s3_server.backend(bucket, "repo", credentials=("wrongkey", "wrong-secret-value"))
    attempts: list[tuple[str, Any]] = [
        ("download", lambda: bad.get("config")),
        ("upload", lambda: bad.put(f"keys/{PACK}", b"k")),
        ("list", lambda: list(bad.list("snapshots/"))),
        ("stat", lambda: bad.stat("config")),
        ("open", bad.exists),
    ]
    for operation, attempt in attempts:
        with pytest.raises(BackendPermissionError) as caught:
            attempt()
        message = caught.value.message
        assert operation in message and bucket in message, message
        assert "wrong-secret-value" not in message + caught.value.hint
        assert "AWS_ACCESS_KEY_ID" in caught.value.hint
    assert good.get("config") == b"c"


def test_dropped_connection_mid_body_is_retried(
    s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = s3_server.backend(s3_server.bucket_name("drop"))
    backend.create()
    backend.put(f"data/ab/{PACK}", b"0123456789")
    real_get = backend.client.get_object
    calls = []

    class BrokenBody:
        def read(self) -> bytes:
            raise IncompleteReadError(actual_bytes=3, expected_bytes=10)

    def flaky_get(**kwargs: Any) -> Any:
        calls.append(kwargs)
        response = real_get(**kwargs)
        if len(calls) <= 2:
            response["Body"].close()
            response["Body"] = BrokenBody()
        return response

    monkeypatch.setattr(backend.client, "get_object", flaky_get)
    monkeypatch.setattr("safehold.backends.s3.BODY_RETRY_DELAY", 0.01)
    assert backend.get(f"data/ab/{PACK}") == b"0123456789"
    assert backend.get_range(f"data/ab/{PACK}", 2, 3) == b"234"
    assert len(calls) == 4
    calls.clear()
    monkeypatch.setattr("safehold.backends.s3.BODY_READ_ATTEMPTS", 2)
    with pytest.raises(BackendError, match="kept dropping"):
        backend.get(f"data/ab/{PACK}")


def test_unreachable_endpoint_is_a_clear_error() -> None:
    backend = S3Backend(
        f"s3:http://127.0.0.1:{free_port()}/bucket/repo",
        credentials=("k", "s"),
        max_attempts=1,
        connect_timeout=2,
    )
    with pytest.raises(BackendError) as caught:
        backend.exists()
    assert "cannot reach http://127.0.0.1:" in caught.value.message
    assert "check the URL" in caught.value.hint


def test_cli_unreachable_endpoint_one_line_no_traceback(run_cli: RunCli) -> None:
    result = run_cli(
        "snapshots", "-r", f"s3:http://127.0.0.1:{free_port()}/bucket/repo",
        env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_MAX_ATTEMPTS": "1"},
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], result.stderr
    assert lines[0].startswith("error: cannot reach http://127.0.0.1:")


def test_cli_round_trip_on_s3(s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello.txt").write_text("hello from s3\n")
    repo = f"s3:{s3_server.endpoint}/{s3_server.bucket_name('cli')}/host1"
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}  # fmt: skip
    init = run_cli("init", "-r", repo, env=env)
    assert init.returncode == 0, init.stderr
    backup = run_cli("backup", "-r", repo, str(source), env=env)
    assert backup.returncode == 0, backup.stderr
    check = run_cli("check", "-r", repo, "--read-data", env=env)
    assert check.returncode == 0, check.stderr + check.stdout
    assert s3_server.secret_key not in init.stdout + init.stderr + backup.stdout + backup.stderr
