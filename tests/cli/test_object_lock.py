"""S3 Object Lock end to end: backups land under retention, forget and prune leave locked
objects in place and say so, and the repository stays valid."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from safehold.backends.s3 import S3Backend
from safehold.repo.pack import BlobType, encode_blob
from safehold.repo.packer import Packer
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer


def test_locked_repository_forget_and_prune_keep_what_is_locked(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    repo = f"s3:{s3_server.endpoint}/{s3_server.bucket_name('locked')}/app"
    env = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "SAFEHOLD_S3_OBJECT_LOCK": "governance:1",
    }
    source = tmp_path / "src"
    source.mkdir()

    def run(*args: str) -> str:
        result = run_cli("-r", repo, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Traceback" not in output and s3_server.secret_key not in output
        return result.stdout

    run("init")
    for number in range(2):
        (source / "data.bin").write_bytes(os.urandom(300_000) + bytes([number]))
        run("backup", str(source))
    first = run("snapshots", "--json").split('"id": "')[1][:64]

    credentials = (s3_server.access_key, s3_server.secret_key)
    backend = S3Backend(repo, credentials=credentials)
    snapshot_until = backend.retention_until(f"snapshots/{first}")
    assert snapshot_until is not None  # written under retention

    forgotten = run("forget", first[:8])
    assert "kept (under retention)" in forgotten and "locked until" in forgotten
    assert first in run("snapshots", "--json")  # the server refused: still there

    # an orphan pack (as a killed backup leaves) is also locked: prune keeps it and says so
    locked = S3Backend(repo, lock_retention=("GOVERNANCE", 1), credentials=credentials)
    repository = Repository.open(locked, TEST_PASSWORD.encode())
    packer = Packer(repository.master, repository.write_pack)
    data = os.urandom(50_000)
    blob_id = hashlib.sha256(data).hexdigest()
    packer.add(encode_blob(repository.master, blob_id, BlobType.DATA, data, None))
    packer.flush()
    packer.close()
    pruned = run("prune")
    assert "kept (under retention)" in pruned and "prune done" in pruned
    check = run("check", "--read-data")
    assert "no errors were found" in check
