"""Index files decoded, checked and presorted on the decoder's workers: the master index they
build is the one a single-process decode builds (search arrays included), damage is named
the same way, and a worker that dies is replaced by decoding in process."""

from __future__ import annotations

import os
import random
import signal
import sys
from array import array
from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.errors import DamagedIndexError
from safehold.repo import index as index_module
from safehold.repo.format import FileType, hash_id, object_name
from safehold.repo.index import (
    IndexColumns,
    IndexDecoder,
    IndexFile,
    MasterIndex,
    PackedBlob,
    decode_columns,
    decode_stored,
    sorted_keys,
)
from safehold.repo.key import KdfParams
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository

PASSWORD = b"presorted index"
FAST = KdfParams(n=1024, r=8, p=1)
WORKERS = sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2


def _files(
    rnd: random.Random, count: int, per_pack: int, listed_twice: bool = True
) -> list[IndexFile]:
    """Index files of random blobs, with the same blob in several packs and files (10%),
    ids sharing their search prefix, both types, and (`listed_twice`) one pack listed in
    two files."""
    known: list[str] = []
    files = []
    for _ in range(count):
        index_file = IndexFile()
        for _ in range(rnd.randint(1, 4)):
            blobs = []
            offset = 0
            for _ in range(rnd.randint(0, per_pack)):
                if known and rnd.random() < 0.1:
                    blob_id = rnd.choice(known)
                elif known and rnd.random() < 0.05:  # same 30-bit prefix, other id
                    blob_id = known[-1][:8] + rnd.randbytes(28).hex()
                else:
                    blob_id = rnd.randbytes(32).hex()
                known.append(blob_id)
                length = rnd.randint(40, 9000)
                unc = rnd.choice([None, length * 2])
                blobs.append(PackedBlob(blob_id, rnd.choice(list(BlobType)), offset, length, unc))
                offset += length
            index_file.packs[rnd.randbytes(32).hex()] = blobs
        files.append(index_file)
    if (
        listed_twice and len(files) > 2
    ):  # a pack listed twice (two concurrent writers): its first listing wins
        pack_id, blobs = next(iter(files[0].packs.items()))
        files[-1].packs[pack_id] = blobs
    return files


def _assert_same_index(index: MasterIndex, reference: MasterIndex) -> None:
    got, expected = index.arrays(), reference.arrays()
    for name in ("pack_ids", "pack_sizes", "ids", "types", "pack_of", "offsets", "lengths",
                 "uncompressed", "prefixes", "order"):  # fmt: skip
        assert getattr(got, name) == getattr(expected, name), name
    assert list(index.blob_ids()) == list(reference.blob_ids())
    assert len(index) == len(reference)


@pytest.mark.parametrize("seed", range(6))
def test_merged_runs_are_the_sort_of_the_ids(seed: int) -> None:
    rnd = random.Random(seed)
    raws = [f.encode() for f in _files(rnd, rnd.randint(1, 7), rnd.choice([3, 40, 400]))]
    presorted, plain = MasterIndex(), MasterIndex()
    for raw in raws:
        columns = decode_columns(raw)
        plain.add_columns(columns)
        columns.sorted_keys = sorted_keys(columns.ids)
        presorted.add_columns(columns)
    if len(raws) <= 2:
        assert presorted._runs_end == presorted.record_count()  # the runs cover everything
    _assert_same_index(presorted, plain)
    probes = [plain._ids[r * 32 : (r + 1) * 32].hex() for r in range(0, plain.record_count(), 7)]
    for blob_id in probes:
        assert presorted.all_locations(blob_id) == plain.all_locations(blob_id)


def test_sorted_keys_are_prefix_then_number() -> None:
    rnd = random.Random(7)
    ids = b"".join(rnd.randbytes(32) for _ in range(500)) + bytes(32) * 3  # equal prefixes
    keys = array("Q")
    keys.frombytes(sorted_keys(ids))
    expected = sorted(
        (index_module._prefix(ids[n * 32 : n * 32 + 4]) << 32) | n for n in range(503)
    )
    assert keys.tolist() == expected
    assert sorted_keys(b"") == b""


def test_runs_are_dropped_when_they_cannot_cover_the_index() -> None:
    """A file without keys (decoded in process), or packs added by a backup, fall back to
    sorting the ids: still the same search arrays."""
    rnd = random.Random(3)
    raws = [f.encode() for f in _files(rnd, 3, 50)]
    mixed, plain = MasterIndex(), MasterIndex()
    for number, raw in enumerate(raws):
        columns = decode_columns(raw)
        plain.add_columns(columns)
        if number != 1:
            columns.sorted_keys = sorted_keys(columns.ids)
        mixed.add_columns(columns)
    assert mixed._runs_end == -1
    blob = PackedBlob(rnd.randbytes(32).hex(), BlobType.DATA, 0, 100, None)
    for index in (mixed, plain):
        index.add_pack("ff" * 32, [blob])
    _assert_same_index(mixed, plain)


def _stored(repo: Repository, name: str) -> bytes:
    return repo.backend.get(name)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, kdf=FAST)


def test_decode_stored_names_damage_as_the_repository_does(repo: Repository) -> None:
    raw = _files(random.Random(1), 1, 20)[0].encode()
    index_id = repo.save_unpacked(FileType.INDEX, raw)
    name = object_name(FileType.INDEX, index_id)
    data = _stored(repo, name)
    columns = decode_stored(repo.master, data, index_id, name)
    assert isinstance(columns, IndexColumns)
    assert columns.packs == decode_columns(raw).packs
    assert columns.sorted_keys == sorted_keys(columns.ids)
    flipped = data[:-1] + bytes([data[-1] ^ 1])
    assert decode_stored(repo.master, flipped, index_id, name) == (
        f"{name} is corrupt: its content does not match its name"
    )
    assert decode_stored(repo.master, flipped, hash_id(flipped), name) == (
        f"{name} is corrupt: authentication failed"
    )
    # a blob id of 64 bytes that are not all hex: the fast decoder hands it to json.loads
    start = raw.index(b'"blobs":[{"id":"') + len(b'"blobs":[{"id":"')
    bad_id = repo.save_unpacked(FileType.INDEX, raw[:start] + b"zz" + raw[start + 2 :])
    bad = _stored(repo, object_name(FileType.INDEX, bad_id))
    problem = decode_stored(repo.master, bad, bad_id, "index/x")
    assert isinstance(problem, str) and problem.startswith("index/x is corrupt: ")


def _fill(repo: Repository, files: int, listed_twice: bool) -> None:
    for index_file in _files(random.Random(11), files, 300, listed_twice):
        repo.save_unpacked(FileType.INDEX, index_file.encode())


@pytest.mark.skipif(not WORKERS, reason="worker processes are used on Linux with 2+ cores")
@pytest.mark.parametrize("listed_twice", [False, True])
def test_a_many_file_index_on_workers_is_the_in_process_one(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed_twice: bool
) -> None:
    _fill(repo, 9, listed_twice)
    damaged = repo.save_unpacked(FileType.INDEX, b'{"packs":[{"id":"x","blobs":[{"id":"y"}]}]}')
    monkeypatch.setattr(index_module, "_PROCESS_MIN_FILES", 10**9)
    errors_here: list[str] = []
    here = Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD).build_index(
        lambda index_id, err: errors_here.append(f"{index_id} {err.message}")
    )
    monkeypatch.setattr(index_module, "_PROCESS_MIN_FILES", 4)
    with IndexDecoder(10, repo.master) as decoder:
        assert decoder._pool is not None
    errors_there: list[str] = []
    there = Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD).build_index(
        lambda index_id, err: errors_there.append(f"{index_id} {err.message}")
    )
    assert errors_there == errors_here and damaged in errors_here[0]
    # presorted runs, merged by the first sort (a pack listed twice: the ids are sorted)
    for index in (here, there):
        assert index._runs_end == (-1 if listed_twice else index.record_count())
    plain = MasterIndex()  # the files decoded without keys: the ids are sorted
    for index_id in repo.list_ids(FileType.INDEX):
        if index_id != damaged:
            plain.add_columns(repo.load_index_file(index_id))
    assert plain._runs_end == -1
    _assert_same_index(here, plain)
    _assert_same_index(there, here)
    with pytest.raises(DamagedIndexError, match=damaged):
        Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD).index  # noqa: B018


@pytest.mark.skipif(not WORKERS, reason="worker processes are used on Linux with 2+ cores")
def test_a_dead_worker_is_replaced_by_decoding_in_process(repo: Repository) -> None:
    raw = _files(random.Random(5), 1, 200)[0].encode()
    index_id = repo.save_unpacked(FileType.INDEX, raw)
    name = object_name(FileType.INDEX, index_id)
    data = _stored(repo, name)
    with IndexDecoder(10, repo.master) as decoder:
        assert decoder._pool is not None
        first = decoder.decode_stored(data, index_id, name)
        for pid in list(decoder._pool._processes):
            os.kill(pid, signal.SIGKILL)
        again = decoder.decode_stored(data, index_id, name)  # the pool is broken now
        assert not isinstance(first, str) and not isinstance(again, str)
        assert again.ids == first.ids and again.sorted_keys == first.sorted_keys
        assert again.packs == first.packs
