"""`copy` through its Python API: two real local repositories with different passwords."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from safehold.app.copy import copy_snapshots
from safehold.app.opener import (
    COPY_SOURCE,
    RepositoryRequest,
    open_repository,
    request_password_source,
)
from safehold.backends.base import join_data
from safehold.backends.local import LocalBackend
from safehold.errors import IntegrityError, PasswordSourceError, UsageError, WrongPasswordError
from safehold.fs.archiver import Archiver, BackupOptions, BackupResult
from safehold.fs.restorer import Restorer
from safehold.redaction import redact
from safehold.repo.check import Checker
from safehold.repo.format import FileType, object_name
from safehold.repo.key import KdfParams
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot, same_snapshot

FAST = KdfParams(n=1024, r=8, p=1)
SOURCE_PASSWORD = b"source password one"
TARGET_PASSWORD = b"target password two"
MIB = 1024 * 1024


@pytest.fixture
def source(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "source"), SOURCE_PASSWORD, kdf=FAST)


@pytest.fixture
def target(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "target"), TARGET_PASSWORD, kdf=FAST)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    rng = random.Random(7)
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "top.txt").write_bytes(b"top\n")
    (root / "a" / "one.bin").write_bytes(rng.randbytes(200_000))
    (root / "a" / "b" / "two.bin").write_bytes(rng.randbytes(2 * MIB))  # several chunks
    (root / "a" / "b" / "zero").write_bytes(b"")
    (root / "text.txt").write_bytes(b"compressible line\n" * 50_000)
    os.symlink("top.txt", root / "link")
    return root


def _backup(repo: Repository, path: Path, parent: BackupResult | None = None) -> BackupResult:
    return Archiver(repo, BackupOptions()).backup(
        [str(path)],
        parent=parent.snapshot if parent else None,
        tags=["t1"],
        safehold_meta={"name": f"snap-{random.random()}"},
    )


def _reopen(repo: Repository, password: bytes) -> Repository:
    """A fresh process's view: nothing cached in memory."""
    return Repository.open(LocalBackend(repo.backend.location), password)


def _digest(root: Path) -> dict[str, tuple[object, ...]]:
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if path.is_symlink():
                what: object = os.readlink(path)
            elif path.is_dir():
                what = "dir"
            else:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            mtime = None if path.is_dir() else st.st_mtime_ns
            result[str(path.relative_to(root))] = (st.st_mode, mtime, what)
    return result


def _restore(repo: Repository, snapshot: Snapshot, target: Path, src: Path) -> Path:
    stats = Restorer(repo).restore(snapshot, str(target))
    assert stats.errors == []
    return target / str(src).lstrip("/")


def _files(repo: Repository) -> dict[str, int]:
    root = Path(repo.backend.location)
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _two_snapshots(source: Repository, src: Path) -> tuple[BackupResult, BackupResult]:
    first = _backup(source, src)
    (src / "a" / "new.bin").write_bytes(os.urandom(300_000))
    (src / "top.txt").write_bytes(b"changed\n")
    second = _backup(source, src, first)
    return first, second


# ----- the whole round trip ---------------------------------------------------------------


def test_copy_restore_bit_exact_and_restic_check(
    source: Repository, target: Repository, src: Path, tmp_path: Path, restic_bin: str
) -> None:
    first, second = _two_snapshots(source, src)
    phases: set[str] = set()
    result = copy_snapshots(source, target, progress=lambda report: phases.add(report.phase))
    assert [c.source.id for c in result.copied] == [first.snapshot.id, second.snapshot.id]
    assert result.skipped == []
    assert result.blobs == len(target.index) and result.data_blobs > 3 and result.tree_blobs > 3
    assert result.packs_written >= 2 and result.packs_verified == result.packs_written
    assert result.bytes_copied > 2 * MIB
    assert {"scan snapshots", "copy blobs", "verify packs", "write snapshots"} <= phases

    fresh = _reopen(target, TARGET_PASSWORD)
    copies = fresh.list_snapshots()
    assert [s.original for s in copies] == [first.snapshot.id, second.snapshot.id]
    for copy, original in zip(copies, [first.snapshot, second.snapshot], strict=True):
        assert copy.id not in (first.snapshot.id, second.snapshot.id)
        assert copy.parent is None  # names a snapshot of the other repository: dropped
        assert same_snapshot(copy, original)
        assert copy.safehold == original.safehold and copy.name == original.name
    # every pack of the target is encrypted with the target's key only
    with pytest.raises(WrongPasswordError):
        _reopen(target, SOURCE_PASSWORD)

    restored = _restore(fresh, copies[-1], tmp_path / "restored", src)
    assert _digest(restored) == _digest(src)
    assert Checker(fresh).run(read_data=True).ok

    env = {
        **os.environ,
        "RESTIC_PASSWORD": TARGET_PASSWORD.decode(),
        "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache"),
    }
    check = subprocess.run(
        [restic_bin, "-r", fresh.backend.location, "check", "--read-data"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    listing = subprocess.run(
        [restic_bin, "-r", fresh.backend.location, "snapshots", "--json", "--no-lock"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert sorted(s["original"] for s in json.loads(listing.stdout)) == sorted(
        [first.snapshot.id, second.snapshot.id]
    )


def test_copying_twice_copies_nothing(source: Repository, target: Repository, src: Path) -> None:
    _two_snapshots(source, src)
    copy_snapshots(source, target)
    before = _files(target)
    again = copy_snapshots(_reopen(source, SOURCE_PASSWORD), _reopen(target, TARGET_PASSWORD))
    assert again.copied == [] and again.blobs == 0 and again.packs_written == 0
    assert len(again.skipped) == 2
    assert _files(target) == before  # nothing written (the shared lock is removed again)


def test_a_copy_of_a_copy_keeps_the_original_id(
    source: Repository, target: Repository, src: Path, tmp_path: Path
) -> None:
    first = _backup(source, src)
    copy_snapshots(source, target)
    third = Repository.init(LocalBackend(tmp_path / "third"), b"third", kdf=FAST)
    copy_snapshots(target, third)
    assert [s.original for s in third.list_snapshots()] == [first.snapshot.id]
    # the source's snapshot is recognised in `third` through the persistent id
    result = copy_snapshots(source, third)
    assert result.copied == [] and len(result.skipped) == 1


def test_copy_a_subset_then_the_rest(
    source: Repository, target: Repository, src: Path, tmp_path: Path
) -> None:
    first, second = _two_snapshots(source, src)
    some = copy_snapshots(source, target, [first.snapshot.id[:10]])
    assert [c.source.id for c in some.copied] == [first.snapshot.id]
    assert [s.original for s in target.list_snapshots()] == [first.snapshot.id]
    rest = copy_snapshots(source, target, ["latest"])
    assert [c.source.id for c in rest.copied] == [second.snapshot.id]
    assert 0 < rest.data_blobs < some.data_blobs  # only what changed: new.bin, top.txt
    # by name, too; both already there now
    by_name = copy_snapshots(source, target, [str(first.snapshot.name)])
    assert by_name.copied == [] and [s.source.id for s in by_name.skipped] == [first.snapshot.id]
    restored = _restore(
        _reopen(target, TARGET_PASSWORD), target.list_snapshots()[0], tmp_path / "r", src
    )
    assert (restored / "top.txt").read_bytes() == b"top\n"


def test_dry_run_writes_nothing(source: Repository, target: Repository, src: Path) -> None:
    _two_snapshots(source, src)
    before_target, before_source = _files(target), _files(source)
    planned = copy_snapshots(source, target, dry_run=True)
    assert planned.dry_run and len(planned.copied) == 2
    assert all(c.target_id is None for c in planned.copied)
    assert planned.packs_written == 0 and planned.bytes_stored == 0
    assert _files(target) == before_target and _files(source) == before_source
    done = copy_snapshots(_reopen(source, SOURCE_PASSWORD), _reopen(target, TARGET_PASSWORD))
    assert (done.tree_blobs, done.data_blobs, done.bytes_copied) == (
        planned.tree_blobs,
        planned.data_blobs,
        planned.bytes_copied,
    )


# ----- failures ---------------------------------------------------------------------------


def _corrupt_a_data_blob(repo: Repository, size_at_least: int = 0) -> str:
    """Flip one byte inside a data blob stored in its pack; return the blob's id."""
    for pack_id, blobs in repo.index.packs.items():
        for blob in blobs:
            if blob.type is BlobType.DATA and blob.length >= size_at_least:
                path = Path(repo.backend.location) / object_name(FileType.PACK, pack_id)
                data = bytearray(path.read_bytes())
                data[blob.offset + blob.length // 2] ^= 0xFF
                os.chmod(path, 0o600)
                path.write_bytes(bytes(data))
                return blob.id
    raise AssertionError("no data blob")


def test_a_corrupt_source_blob_aborts_and_writes_no_snapshot(
    source: Repository, target: Repository, src: Path
) -> None:
    _two_snapshots(source, src)
    bad = _corrupt_a_data_blob(source, 100_000)
    with pytest.raises(IntegrityError) as caught:
        copy_snapshots(_reopen(source, SOURCE_PASSWORD), target)
    assert bad in caught.value.message and "corrupt" in caught.value.message
    assert "no snapshot was written" in caught.value.message
    assert "check --read-data" in caught.value.hint
    fresh = _reopen(target, TARGET_PASSWORD)
    assert fresh.list_snapshots() == []
    assert fresh.list_ids(FileType.LOCK) == []
    assert not fresh.index.has(bad)
    report = Checker(fresh).run(read_data=True)  # what was kept is complete and indexed
    assert report.ok, report.errors
    assert report.warnings == []


def test_a_pack_damaged_on_the_way_is_detected(
    source: Repository, target: Repository, src: Path
) -> None:
    """The read-back verification is real: a pack stored wrongly stops the copy."""
    _backup(source, src)
    real = target.write_pack

    def damaging_write(pack_id: str, data: object) -> None:
        raw = bytearray(join_data(data))  # type: ignore[arg-type]
        raw[-10] ^= 0x01  # inside the encrypted header
        real(pack_id, bytes(raw))

    target.write_pack = damaging_write  # type: ignore[method-assign]
    with pytest.raises(IntegrityError, match="just written"):
        copy_snapshots(source, target)
    assert _reopen(target, TARGET_PASSWORD).list_snapshots() == []
    assert target.list_ids(FileType.INDEX) == []  # a bad pack is never indexed


def test_the_same_repository_is_refused(source: Repository, src: Path) -> None:
    _backup(source, src)
    with pytest.raises(UsageError, match="same repository"):
        copy_snapshots(source, _reopen(source, SOURCE_PASSWORD))


# ----- the source's password ---------------------------------------------------------------


def test_source_password_comes_from_the_from_variables(source: Repository, tmp_path: Path) -> None:
    location = source.backend.location
    env = {"SAFEHOLD_PASSWORD": "the target's", "SAFEHOLD_FROM_PASSWORD": SOURCE_PASSWORD.decode()}
    opened = open_repository(RepositoryRequest(location, role=COPY_SOURCE), env)
    assert opened.config.id == source.config.id
    assert SOURCE_PASSWORD.decode() not in redact(f"x {SOURCE_PASSWORD.decode()} y")  # registered

    secret_file = tmp_path / "pw"
    secret_file.write_bytes(SOURCE_PASSWORD + b"\n")
    by_file = {"SAFEHOLD_FROM_PASSWORD_FILE": str(secret_file)}
    from_location = RepositoryRequest(location, role=COPY_SOURCE)
    assert open_repository(from_location, by_file).key_id == source.key_id
    by_option = RepositoryRequest(location, password_command=f"cat {secret_file}", role=COPY_SOURCE)
    assert open_repository(by_option, {}).key_id == source.key_id
    by_env_location = {"SAFEHOLD_FROM_REPOSITORY": location, **by_file}
    assert open_repository(RepositoryRequest(role=COPY_SOURCE), by_env_location).config.id

    # the target's password is never used for the source
    with pytest.raises(PasswordSourceError) as caught:
        request_password_source(
            RepositoryRequest(role=COPY_SOURCE), {"SAFEHOLD_PASSWORD": "x"}, can_ask=False
        )
    assert "source" in caught.value.message and "SAFEHOLD_FROM_PASSWORD" in caught.value.hint
    with pytest.raises(WrongPasswordError) as wrong:
        open_repository(from_location, {"SAFEHOLD_FROM_PASSWORD": "nope"})
    assert "source repository" in wrong.value.message
    with pytest.raises(PasswordSourceError, match="source repository"):
        missing = RepositoryRequest(location, str(tmp_path / "missing"), role=COPY_SOURCE)
        open_repository(missing, {})
    with pytest.raises(UsageError, match="no source repository given"):
        open_repository(RepositoryRequest(role=COPY_SOURCE), {})
