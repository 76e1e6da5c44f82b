"""The repository on real backends: open/init, integrity, keys, locks, snapshots, packs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.backends.base import Backend
from safehold.backends.local import LocalBackend
from safehold.backends.memory import MemoryBackend
from safehold.errors import (
    IntegrityError,
    MissingObjectError,
    NotARepositoryError,
    RepositoryExistsError,
    RepositoryLockedError,
    RepositoryNotFoundError,
    SafeholdWarning,
    SnapshotNotFoundError,
    UsageError,
    WrongPasswordError,
)
from safehold.repo.clock import Host, local_now
from safehold.repo.format import FileType, object_name, zstd_decompressor
from safehold.repo.gotypes import GoTime
from safehold.repo.key import KdfParams
from safehold.repo.lock import Lock
from safehold.repo.pack import BlobType, EncodedBlob, encode_blob, read_header
from safehold.repo.packer import Packer
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node, encode_tree

FAST = KdfParams(n=1024, r=8, p=1)
PASSWORD = b"correct horse battery staple"
HOST = Host("test-host", "tester", 1000, 1000, os.getpid())
MINUTE = 60 * 1_000_000_000


class FakeClock:
    """Starts at the real time; tests move it."""

    def __init__(self) -> None:
        self.now = local_now()

    def __call__(self) -> GoTime:
        return self.now

    def advance(self, ns: int) -> None:
        self.now = GoTime(self.now.ns + ns, self.now.offset)


@pytest.fixture(params=["memory", "local"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    """A factory of backends that all point at the same (initially absent) location."""
    if request.param == "memory":
        shared = MemoryBackend("test")
        return lambda: shared
    return lambda: LocalBackend(tmp_path / "repo")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def repo(make_backend: Callable[[], Backend], clock: FakeClock) -> Repository:
    return Repository.init(make_backend(), PASSWORD, kdf=FAST, clock=clock, host=HOST)


def _open(
    make_backend: Callable[[], Backend], password: bytes = PASSWORD, **kw: object
) -> Repository:
    return Repository.open(make_backend(), password, host=HOST, **kw)  # type: ignore[arg-type]


def _corrupt(backend: Backend, name: str, position: int) -> None:
    data = bytearray(backend.get(name))
    data[position] ^= 0x01
    backend.delete(name)
    backend.put(name, bytes(data))


# ----- init and open -----------------------------------------------------------------------


def test_init_then_open(repo: Repository, make_backend: Callable[[], Backend]) -> None:
    opened = _open(make_backend)
    assert opened.config == repo.config
    assert opened.config.version == 2
    assert opened.master == repo.master
    assert opened.key_id == repo.key_id
    backend = make_backend()
    assert [info.name for info in backend.list("keys/")] == [f"keys/{repo.key_id}"]
    assert backend.stat("config").size > 32
    # the config is encrypted: no JSON in the clear
    assert b"chunker_polynomial" not in backend.get("config")


def test_init_refuses_an_existing_repository(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    with pytest.raises(RepositoryExistsError):
        Repository.init(make_backend(), b"other", kdf=FAST, host=HOST)
    assert _open(make_backend).config == repo.config


def test_wrong_password(repo: Repository, make_backend: Callable[[], Backend]) -> None:
    with pytest.raises(WrongPasswordError) as caught:
        _open(make_backend, b"not the password")
    assert caught.value.exit_code == 12


def test_open_missing_location(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        Repository.open(MemoryBackend(), PASSWORD)
    with pytest.raises(RepositoryNotFoundError):
        Repository.open(LocalBackend(tmp_path / "does-not-exist"), PASSWORD)


def test_open_empty_location_is_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepositoryError):
        Repository.open(LocalBackend(tmp_path), PASSWORD)
    created = MemoryBackend()
    created.create()
    with pytest.raises(NotARepositoryError):
        Repository.open(created, PASSWORD)


def test_config_without_keys_is_not_a_repository(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    make_backend().delete(f"keys/{repo.key_id}")
    with pytest.raises(NotARepositoryError):
        _open(make_backend)


def test_corrupt_config_is_an_integrity_error(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    _corrupt(make_backend(), "config", 20)
    with pytest.raises(IntegrityError, match="config"):
        _open(make_backend)


# ----- unpacked files ----------------------------------------------------------------------


def test_save_and_load_unpacked(repo: Repository, make_backend: Callable[[], Backend]) -> None:
    plaintext = b'{"hello":"world","n":[1,2,3]}'
    object_id = repo.save_unpacked(FileType.SNAPSHOT, plaintext)
    stored = make_backend().get(f"snapshots/{object_id}")
    assert hashlib.sha256(stored).hexdigest() == object_id
    # version 2 framing: 0x02 then zstd
    framed = repo.master.decrypt_object(stored)
    assert framed[0] == 2
    assert zstd_decompressor().decompress(framed[1:]) == plaintext
    assert _open(make_backend).load_unpacked(FileType.SNAPSHOT, object_id) == plaintext
    assert repo.list_ids(FileType.SNAPSHOT) == [object_id]


def test_flipped_byte_names_the_file(repo: Repository, make_backend: Callable[[], Backend]) -> None:
    object_id = repo.save_unpacked(FileType.INDEX, b'{"packs":[]}')
    name = f"index/{object_id}"
    _corrupt(make_backend(), name, 40)
    with pytest.raises(IntegrityError) as caught:
        repo.load_unpacked(FileType.INDEX, object_id)
    assert name in str(caught.value)


def test_valid_object_under_another_name_is_detected(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    """Authentication alone cannot catch a swapped file; the name (its hash) does."""
    backend = make_backend()
    old_id = repo.save_unpacked(FileType.SNAPSHOT, b'{"which":"old"}')
    new_id = repo.save_unpacked(FileType.SNAPSHOT, b'{"which":"new"}')
    backend.delete(f"snapshots/{new_id}")
    backend.put(f"snapshots/{new_id}", backend.get(f"snapshots/{old_id}"))
    with pytest.raises(IntegrityError, match=f"snapshots/{new_id}.*does not match"):
        repo.load_unpacked(FileType.SNAPSHOT, new_id)


def test_tampering_that_keeps_the_name_valid_fails_authentication(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    backend = make_backend()
    object_id = repo.save_unpacked(FileType.SNAPSHOT, b'{"x":1}')
    data = bytearray(backend.get(f"snapshots/{object_id}"))
    data[20] ^= 0x40
    forged_id = hashlib.sha256(data).hexdigest()
    backend.put(f"snapshots/{forged_id}", bytes(data))
    with pytest.raises(IntegrityError, match=f"snapshots/{forged_id}.*authentication"):
        repo.load_unpacked(FileType.SNAPSHOT, forged_id)


def test_missing_unpacked_file(repo: Repository) -> None:
    with pytest.raises(MissingObjectError):
        repo.load_unpacked(FileType.SNAPSHOT, "ab" * 32)


# ----- keys --------------------------------------------------------------------------------


def test_add_list_and_remove_keys(
    repo: Repository, make_backend: Callable[[], Backend], clock: FakeClock
) -> None:
    clock.advance(MINUTE)
    second = repo.add_key(b"second password", FAST)
    keys = repo.list_keys()
    assert [key.id for key in keys] == [repo.key_id, second]  # oldest first
    assert [key.current for key in keys] == [True, False]
    assert {(key.username, key.hostname) for key in keys} == {("tester", "test-host")}

    via_second = _open(make_backend, b"second password")
    assert via_second.key_id == second
    assert via_second.master == repo.master
    assert repo.resolve_key(second[:10]) == second
    with pytest.raises(UsageError):
        repo.resolve_key("")  # matches both

    with pytest.raises(UsageError, match="this session"):
        repo.remove_key(repo.key_id)
    via_second.remove_key(repo.key_id)
    with pytest.raises(WrongPasswordError):
        _open(make_backend)
    # repo's own key is gone now; removing the only remaining key is refused
    with pytest.raises(UsageError, match="last key"):
        repo.remove_key(second)
    assert _open(make_backend, b"second password").key_id == second


def test_change_password(repo: Repository, make_backend: Callable[[], Backend]) -> None:
    old = repo.key_id
    new = repo.change_password(b"new password", FAST)
    assert new != old and repo.key_id == new
    assert repo.list_ids(FileType.KEY) == [new]
    with pytest.raises(WrongPasswordError):
        _open(make_backend)
    assert _open(make_backend, b"new password").master == repo.master


# ----- locks -------------------------------------------------------------------------------


def test_exclusive_lock_blocks_others(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    other = _open(make_backend)
    with repo.locked(True):
        assert len(repo.list_locks()) == 1
        with pytest.raises(RepositoryLockedError) as caught, other.locked(False):
            pass
        assert "exclusive lock by PID" in str(caught.value)
        assert caught.value.exit_code == 11
        assert len(repo.list_locks()) == 1  # the failed attempt left nothing behind
    assert repo.list_locks() == []
    with other.locked(False):
        pass


def test_shared_locks_coexist_and_block_exclusive(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    other = _open(make_backend)
    with repo.locked(False), other.locked(False):
        assert len(repo.list_locks()) == 2
        with pytest.raises(RepositoryLockedError), _open(make_backend).locked(True):
            pass
    assert repo.list_locks() == []


def _write_lock(repo: Repository, lock: Lock) -> str:
    return repo.save_unpacked(FileType.LOCK, lock.encode())


def test_stale_locks_do_not_block_and_are_removed(repo: Repository, clock: FakeClock) -> None:
    old = GoTime(clock.now.ns - 31 * MINUTE)
    stale = _write_lock(repo, Lock(old, True, "elsewhere", "x", 1))
    live = _write_lock(repo, Lock(clock.now, False, "elsewhere", "x", 1))
    with repo.locked(False):
        pass
    with pytest.raises(RepositoryLockedError), repo.locked(True):  # blocked by `live`
        pass
    assert repo.remove_stale_locks() == 1
    assert [lock_id for lock_id, _ in repo.list_locks()] == [live]
    assert stale not in repo.list_ids(FileType.LOCK)
    # time passes: the other host's lock goes stale too
    clock.advance(31 * MINUTE)
    with repo.locked(True):
        pass
    assert repo.remove_stale_locks() == 1
    assert repo.list_locks() == []


def test_lock_of_a_dead_process_on_this_host_is_stale(repo: Repository, clock: FakeClock) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    _write_lock(repo, Lock(clock.now, True, HOST.hostname, "x", child.pid))
    with repo.locked(True):
        pass
    assert repo.remove_stale_locks() == 1


def test_unreadable_lock_is_listed_and_removed(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    make_backend().put("locks/" + "ab" * 32, b"garbage written by someone else")
    assert repo.list_locks() == [("ab" * 32, None)]
    with repo.locked(True):
        pass
    assert repo.remove_stale_locks() == 1


def test_remove_all_locks(repo: Repository, clock: FakeClock) -> None:
    _write_lock(repo, Lock(clock.now, True, "elsewhere", "x", 1))
    assert repo.remove_stale_locks() == 0
    assert repo.remove_stale_locks(remove_all=True) == 1


# ----- snapshots ---------------------------------------------------------------------------


def _snapshot(repo: Repository, seconds: int, name: str | None = None) -> Snapshot:
    snapshot = Snapshot(
        time=GoTime(1_700_000_000 * 10**9 + seconds * 10**9, 0),
        tree="00" * 32,
        paths=["/data"],
        safehold={"name": name} if name else {},
    )
    repo.save_snapshot(snapshot)
    return snapshot


def test_find_snapshot(repo: Repository, make_backend: Callable[[], Backend]) -> None:
    middle = _snapshot(repo, 20, name="before-upgrade")
    newest = _snapshot(repo, 30)
    oldest = _snapshot(repo, 10)
    fresh = _open(make_backend)
    listed = fresh.list_snapshots()
    assert [snapshot.id for snapshot in listed] == [oldest.id, middle.id, newest.id]
    assert listed[1] == middle
    assert fresh.find_snapshot("latest").id == newest.id
    assert fresh.find_snapshot("before-upgrade").id == middle.id
    assert fresh.find_snapshot(oldest.id).id == oldest.id
    assert fresh.find_snapshot(oldest.id.upper()).id == oldest.id
    with pytest.raises(SnapshotNotFoundError):
        fresh.find_snapshot("no-such-name")


def test_find_snapshot_by_prefix_and_ambiguity(repo: Repository) -> None:
    snapshots = [_snapshot(repo, second) for second in range(17)]
    ids = [snapshot.id for snapshot in snapshots]
    # 17 ids, 16 hex digits: two share a first digit (pigeonhole)
    first_digits = [snapshot_id[0] for snapshot_id in ids]
    shared = next(digit for digit in first_digits if first_digits.count(digit) > 1)
    with pytest.raises(UsageError, match="ambiguous"):
        repo.find_snapshot(shared)
    for snapshot_id in ids:
        prefix = next(
            snapshot_id[:length]
            for length in range(1, 65)
            if sum(other.startswith(snapshot_id[:length]) for other in ids) == 1
        )
        assert repo.find_snapshot(prefix).id == snapshot_id
        assert repo.find_snapshot(snapshot_id[:8]).id == snapshot_id


def test_latest_of_an_empty_repository(repo: Repository) -> None:
    with pytest.raises(SnapshotNotFoundError):
        repo.find_snapshot("latest")


def test_corrupt_snapshot_is_reported(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    snapshot = _snapshot(repo, 1)
    intact = _snapshot(repo, 2)
    _corrupt(make_backend(), f"snapshots/{snapshot.id}", 17)
    with pytest.raises(IntegrityError, match=snapshot.id):
        repo.load_snapshot(snapshot.id)
    # a listing skips it with a warning naming it (issue 14: damage stays local)
    with pytest.warns(SafeholdWarning, match=f"damaged snapshot {snapshot.id[:8]}"):
        assert [s.id for s in repo.list_snapshots()] == [intact.id]
    assert set(repo.damaged_snapshots) == {snapshot.id}


# ----- packs, index and blobs --------------------------------------------------------------


def _blob(repo: Repository, plaintext: bytes, blob_type: BlobType) -> EncodedBlob:
    blob_id = hashlib.sha256(plaintext).hexdigest()
    return encode_blob(repo.master, blob_id, blob_type, plaintext, 3)


def _store(repo: Repository, blobs: list[tuple[bytes, BlobType]], target_size: int) -> Packer:
    packer = Packer(repo.master, repo.write_pack, target_size=target_size)
    try:
        for plaintext, blob_type in blobs:
            packer.add(_blob(repo, plaintext, blob_type))
        packer.flush()
    finally:
        _close(packer)
    repo.save_index(packer.take_finished(), [])
    return packer


def _close(packer: Packer) -> None:
    close = getattr(packer, "close", None)  # the packer gained a writer pool; older had none
    if close is not None:
        close()


def test_packer_writes_packs_that_read_back_through_the_index(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    data_blobs = [os.urandom(700) for _ in range(12)] + [b"compress me " * 200]
    tree = encode_tree(
        [Node(name=b"f", type="file", content=[hashlib.sha256(data_blobs[0]).hexdigest()])]
    )
    blobs = [(blob, BlobType.DATA) for blob in data_blobs] + [(tree, BlobType.TREE)]
    packer = _store(repo, blobs, target_size=2000)
    assert packer.packs_written >= 4
    assert packer.take_finished() == {}

    backend = make_backend()
    fresh = _open(make_backend)
    packs = fresh.index.packs
    assert len(packs) == packer.packs_written
    for pack_id, entries in packs.items():
        stored = backend.get(object_name(FileType.PACK, pack_id))
        assert hashlib.sha256(stored).hexdigest() == pack_id
        assert read_header(fresh.master, stored) == entries
        assert len({entry.type for entry in entries}) == 1  # data and trees never share a pack
    for plaintext, blob_type in blobs:
        blob_id = hashlib.sha256(plaintext).hexdigest()
        assert fresh.load_blob(blob_id) == plaintext
        assert fresh.load_blob(blob_id, blob_type) == plaintext
    tree_id = hashlib.sha256(tree).hexdigest()
    assert fresh.load_tree(tree_id)[0].name == b"f"
    with pytest.raises(MissingObjectError):
        fresh.load_blob(tree_id, BlobType.DATA)
    with pytest.raises(MissingObjectError):
        fresh.load_blob("12" * 32)


def test_packs_on_disk_use_restic_layout(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "r"), PASSWORD, kdf=FAST, host=HOST)
    _store(repo, [(b"some data", BlobType.DATA)], target_size=10**6)
    (pack_id,) = repo.index.packs
    assert (tmp_path / "r" / "data" / pack_id[:2] / pack_id).is_file()
    (index_id,) = repo.list_ids(FileType.INDEX)
    assert (tmp_path / "r" / "index" / index_id).is_file()


def test_load_blob_falls_back_to_a_second_copy(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    plaintext = b"precious bytes " * 40
    blob_id = hashlib.sha256(plaintext).hexdigest()
    _store(repo, [(plaintext, BlobType.DATA)], target_size=10**6)
    _store(repo, [(plaintext, BlobType.DATA), (b"other", BlobType.DATA)], target_size=10**6)

    fresh = _open(make_backend)
    locations = fresh.index.all_locations(blob_id)
    assert len(locations) == 2
    first = locations[0]
    _corrupt(make_backend(), object_name(FileType.PACK, first.pack_id), first.blob.offset + 20)
    assert fresh.load_blob(blob_id) == plaintext

    second = locations[1]
    _corrupt(make_backend(), object_name(FileType.PACK, second.pack_id), second.blob.offset + 20)
    with pytest.raises(IntegrityError, match=blob_id[:8]):
        fresh.load_blob(blob_id)


def test_load_blob_when_the_pack_is_missing(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    _store(repo, [(b"gone soon", BlobType.DATA)], target_size=10**6)
    (pack_id,) = repo.index.packs
    make_backend().delete(object_name(FileType.PACK, pack_id))
    with pytest.raises(MissingObjectError, match=pack_id[:8]):
        repo.load_blob(hashlib.sha256(b"gone soon").hexdigest())


def test_blob_whose_content_does_not_match_its_id(repo: Repository) -> None:
    packer = Packer(repo.master, repo.write_pack, target_size=10**6)
    packer.add(encode_blob(repo.master, "34" * 32, BlobType.DATA, b"not what the id says", None))
    packer.flush()
    _close(packer)
    repo.save_index(packer.take_finished(), [])
    with pytest.raises(IntegrityError, match="hash mismatch"):
        repo.load_blob("34" * 32)


def test_save_index_supersedes(repo: Repository) -> None:
    first = repo.save_index({}, [])
    assert first == []
    _store(repo, [(b"a", BlobType.DATA)], target_size=10**6)
    (old_index,) = repo.list_ids(FileType.INDEX)
    written = repo.save_index({}, [old_index])
    assert len(written) == 1
    files = repo.load_index_files()
    assert files[written[0]].supersedes == [old_index]
    assert files[written[0]].packs == {}


# ----- safehold records --------------------------------------------------------------------


def test_records_round_trip_through_the_repository(
    repo: Repository, make_backend: Callable[[], Backend]
) -> None:
    first = repo.save_record("drills", {"app": "shop", "ok": True})
    second = repo.save_record("drills", {"app": "shop", "ok": False, "note": "é"})
    assert repo.backend.stat(f"safehold/drills/{first}").size > 0
    reopened = _open(make_backend)
    assert reopened.list_record_ids("drills") == sorted([first, second])
    assert dict(reopened.load_records("drills")) == {
        first: {"app": "shop", "ok": True},
        second: {"app": "shop", "ok": False, "note": "é"},
    }
    assert reopened.load_records("other") == []
    reopened.delete_record("drills", first)
    assert [rid for rid, _ in reopened.load_records("drills")] == [second]
    with pytest.raises(IntegrityError, match="missing"):
        reopened.load_record("drills", first)
    with pytest.raises(ValueError, match="invalid record kind"):
        reopened.save_record("../keys", {})


def test_a_corrupt_record_is_an_integrity_error(repo: Repository) -> None:
    record_id = repo.save_record("drills", {"app": "shop"})
    _corrupt(repo.backend, f"safehold/drills/{record_id}", 40)
    with pytest.raises(IntegrityError, match="corrupt"):
        repo.load_records("drills")
