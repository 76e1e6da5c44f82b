"""The columnar master index: lookups, duplicates, superseded files, packs added while a backup
runs, iteration order, the two decoders, and what it costs per blob."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.backends.local import LocalBackend
from safehold.errors import IntegrityError
from safehold.repo import index as index_module
from safehold.repo.check import Checker
from safehold.repo.format import FileType
from safehold.repo.index import (
    BlobLocation,
    IndexColumns,
    IndexFile,
    MasterIndex,
    _decode_canonical,
    decode_columns,
)
from safehold.repo.key import KdfParams
from safehold.repo.pack import BlobType, PackedBlob, encode_blob
from safehold.repo.packer import Packer
from safehold.repo.repository import Repository

PASSWORD = b"compact index"
FAST = KdfParams(n=1024, r=8, p=1)


class Reference:
    """The semantics the compact index must keep: the old dict-of-objects master index."""

    def __init__(self) -> None:
        self.blobs: dict[str, list[BlobLocation]] = {}
        self.packs: dict[str, list[PackedBlob]] = {}

    def add_pack(self, pack_id: str, blobs: list[PackedBlob]) -> None:
        if pack_id in self.packs:
            return
        self.packs[pack_id] = blobs
        for blob in blobs:
            self.blobs.setdefault(blob.id, []).append(BlobLocation(pack_id, blob))


def _random_pack(rnd: random.Random, known: list[str], size: int) -> list[PackedBlob]:
    blobs = []
    offset = 0
    for _ in range(size):
        if known and rnd.random() < 0.1:
            blob_id = rnd.choice(known)  # the same blob in another pack: a duplicate
        else:
            blob_id = rnd.randbytes(32).hex()
            known.append(blob_id)
        length = rnd.randint(33, 5000)
        unc = rnd.choice([None, length * 3])
        blob_type = rnd.choice(list(BlobType))
        blobs.append(PackedBlob(blob_id, blob_type, offset, length, unc))
        offset += length
    return blobs


def _assert_same(index: MasterIndex, ref: Reference, probes: list[str]) -> None:
    for blob_id in probes:
        expected = ref.blobs.get(blob_id, [])
        assert index.all_locations(blob_id) == expected
        assert index.lookup(blob_id) == (expected[0] if expected else None)
        assert index.has(blob_id) == bool(expected)
    assert len(index) == len(ref.blobs)
    assert list(index.blob_ids()) == list(ref.blobs)  # first-added order
    assert list(index.packs) == list(ref.packs)  # packs in the order added
    for pack_id, blobs in ref.packs.items():
        assert index.packs[pack_id] == blobs
        assert pack_id in index.packs
    assert "ff" * 32 not in index.packs
    with pytest.raises(KeyError):
        index.packs["ff" * 32]


@pytest.fixture
def small_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-sort after a few dozen new blobs, so tests cross the dict/sorted boundary often."""
    monkeypatch.setattr(index_module, "_MIN_TAIL", 40)


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32), steps=st.lists(st.integers(0, 120), min_size=1, max_size=12))
def test_matches_the_reference_through_sorts_and_pending_packs(seed: int, steps: list[int]) -> None:
    rnd = random.Random(seed)
    saved = index_module._MIN_TAIL
    index_module._MIN_TAIL = 40
    try:
        index, ref, known = MasterIndex(), Reference(), []
        for step, size in enumerate(steps):
            pack_id = rnd.randbytes(32).hex()
            blobs = _random_pack(rnd, known, size)
            ref.add_pack(pack_id, blobs)
            if step % 3 == 0:  # as an index file arrives at open
                index.add_columns(decode_columns(IndexFile(packs={pack_id: blobs}).encode()))
            else:  # as the archiver adds the packs it wrote
                index.add_pack(pack_id, blobs)
            if rnd.random() < 0.3:  # a pack listed again (another index file) changes nothing
                index.add_pack(pack_id, blobs[:1])
                ref.add_pack(pack_id, blobs[:1])
            probes = [*rnd.sample(known, min(len(known), 30)), rnd.randbytes(32).hex()]
            _assert_same(index, ref, probes)
    finally:
        index_module._MIN_TAIL = saved


def test_large_index_lookups_and_size() -> None:
    """60,000 blobs from index files: every blob is found where it is, and the per-blob memory
    (traced Python allocations) stays within 70 bytes, below restic's ~96."""
    rnd = random.Random(7)
    files = []
    expected: dict[str, tuple[str, PackedBlob]] = {}
    for _ in range(3):
        packs = {}
        for _ in range(40):
            pack_id = rnd.randbytes(32).hex()
            offset = 0
            blobs = []
            for _ in range(500):
                blob = PackedBlob(rnd.randbytes(32).hex(), BlobType.DATA, offset, 100, 300)
                blobs.append(blob)
                expected[blob.id] = (pack_id, blob)
                offset += 100
            packs[pack_id] = blobs
        files.append(IndexFile(packs=packs).encode())
    columns = [decode_columns(raw) for raw in files]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = MasterIndex()
        for decoded in columns:
            index.add_columns(decoded)
        assert index.has(next(iter(expected)))  # sorts
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    blobs = len(expected)
    assert held / blobs < 70, f"{held / blobs:.1f} bytes per blob"
    assert index.memory_bytes() / blobs < 60
    for blob_id, (pack_id, blob) in rnd.sample(sorted(expected.items()), 2000):
        assert index.lookup(blob_id) == BlobLocation(pack_id, blob)
    assert len(index) == blobs
    assert index.pack_count() == 120


def test_ids_sharing_a_prefix_are_told_apart() -> None:
    """The search key is a 30-bit prefix: ids that agree on it must still be separate."""
    prefix = os.urandom(4)
    ids = [(prefix + os.urandom(28)).hex() for _ in range(50)]
    index = MasterIndex()
    index.add_pack("aa" * 32, [PackedBlob(i, BlobType.DATA, n * 40, 40, None) for n, i in
                              enumerate(ids[:25])])  # fmt: skip
    index.add_pack("bb" * 32, [PackedBlob(i, BlobType.TREE, n * 40, 40, None) for n, i in
                              enumerate(ids[20:])])  # fmt: skip
    for number, blob_id in enumerate(ids):
        locations = index.all_locations(blob_id)
        packs = [location.pack_id[:2] for location in locations]
        assert packs == (["aa"] if number < 20 else ["aa", "bb"] if number < 25 else ["bb"])
    assert not index.has((prefix + bytes(28)).hex())
    assert len(index) == 50


def test_duplicates_across_index_files_keep_file_order() -> None:
    blob = "ee" * 32
    first = PackedBlob(blob, BlobType.DATA, 0, 50, None)
    second = PackedBlob(blob, BlobType.DATA, 50, 60, 100)
    third = PackedBlob(blob, BlobType.DATA, 0, 70, 100)
    index = MasterIndex()
    for pack, entry in (("01", first), ("02", second), ("03", third)):
        raw = IndexFile(packs={pack * 32: [entry]}).encode()
        index.add_columns(decode_columns(raw))
    assert [loc.pack_id[:2] for loc in index.all_locations(blob)] == ["01", "02", "03"]
    assert index.lookup(blob) == BlobLocation("01" * 32, first)
    assert len(index) == 1
    assert list(index.blob_ids()) == [blob]
    assert index.record_count() == 3


def test_lookups_are_case_insensitive_and_reject_malformed_ids() -> None:
    blob = PackedBlob("ab" * 32, BlobType.DATA, 0, 50, None)
    index = MasterIndex()
    index.add_pack("01" * 32, [blob])
    assert index.lookup("AB" * 32) == BlobLocation("01" * 32, blob)
    for bad in ("", "ab", "zz" * 32, "ab" * 33):
        assert index.lookup(bad) is None and not index.has(bad)


def test_huge_offsets_widen_the_columns() -> None:
    far = PackedBlob("cd" * 32, BlobType.DATA, 2**33, 2**32, 2**32 + 5)
    near = PackedBlob("ce" * 32, BlobType.DATA, 0, 40, None)
    index = MasterIndex()
    index.add_pack("01" * 32, [near])
    index.add_columns(decode_columns(IndexFile(packs={"02" * 32: [far]}).encode()))
    assert index.lookup(far.id) == BlobLocation("02" * 32, far)
    assert index.lookup(near.id) == BlobLocation("01" * 32, near)


def test_readers_on_other_threads_while_packs_are_added(small_tail: None) -> None:
    """blobsaver threads call has() while the archiver adds packs and re-sorts happen."""
    rnd = random.Random(3)
    index = MasterIndex()
    added: list[str] = []
    errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            for blob_id in added[-200:]:  # only ids whose pack was added completely
                if not index.has(blob_id):
                    errors.append(blob_id)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(60):
            blobs = _random_pack(rnd, [], 37)
            index.add_pack(rnd.randbytes(32).hex(), blobs)
            added.extend(blob.id for blob in blobs)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(index) == len(set(added))


# ----- decoding -------------------------------------------------------------------------------

_SAMPLE: dict[str, Any] = {
    "supersedes": ["12" * 32],
    "packs": [
        {
            "id": "a1" * 32,
            "blobs": [
                {"id": "b1" * 32, "type": "data", "offset": 0, "length": 100},
                {
                    "id": "b2" * 32,
                    "type": "tree",
                    "offset": 100,
                    "length": 50,
                    "uncompressed_length": 200,
                },
            ],
        },
        {"id": "a2" * 32, "blobs": []},
        {"id": "a3" * 32, "blobs": [{"id": "b3" * 32, "type": "data", "offset": 0, "length": 9}]},
    ],
}


def _same(one: IndexColumns, other: IndexColumns) -> None:
    assert one.supersedes == other.supersedes
    assert one.packs == other.packs
    assert one.pack_ids == other.pack_ids


def test_canonical_layout_takes_the_fast_path() -> None:
    raw = json.dumps(_SAMPLE, separators=(",", ":")).encode()
    fast = _decode_canonical(raw)
    assert fast is not None
    assert list(fast.pack_sizes) == [2, 0, 1]
    assert fast.types == bytes([0, 1, 0])
    assert fast.packs["a1" * 32][1] == PackedBlob("b2" * 32, BlobType.TREE, 100, 50, 200)
    assert fast.supersedes == ["12" * 32]
    _same(fast, decode_columns(json.dumps(_SAMPLE, indent=2).encode()))


def _reordered() -> bytes:
    packs = [{"blobs": pack["blobs"], "id": pack["id"]} for pack in _SAMPLE["packs"]]
    value = {"packs": packs, "supersedes": _SAMPLE["supersedes"]}
    return json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(_SAMPLE, indent=1).encode(),  # whitespace
        _reordered(),  # other key order
        json.dumps(_SAMPLE, separators=(",", ":")).encode().replace(b"[]", b"null"),
        json.dumps(_SAMPLE, separators=(",", ":"))  # an extra field in a blob
        .encode()
        .replace(b'"length":9}', b'"length":9,"x":1}'),
    ],
)
def test_other_layouts_decode_the_same_through_json(raw: bytes) -> None:
    assert _decode_canonical(raw) is None
    reference = decode_columns(json.dumps(_SAMPLE, separators=(",", ":")).encode())
    decoded = decode_columns(raw)
    _same(decoded, reference)


def test_legacy_list_format_and_zero_uncompressed_length() -> None:
    legacy = json.dumps(
        [{"id": "a1" * 32, "blobs": [{"id": "b1" * 32, "type": "data", "offset": 0,
                                       "length": 40, "uncompressed_length": 0}]}]
    ).encode()  # fmt: skip
    decoded = decode_columns(legacy)
    assert decoded.supersedes == []
    assert decoded.packs == {"a1" * 32: [PackedBlob("b1" * 32, BlobType.DATA, 0, 40, None)]}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"packs":[{"id":"' + b"a" * 64 + b'","blobs":[{"id":"short","type":"data",'
        b'"offset":0,"length":1}]}]}',
        b'{"packs":[{"id":"' + b"a" * 64 + b'","blobs":[{"id":"' + b"b" * 64 + b'",'
        b'"type":"blue","offset":0,"length":1}]}]}',
        b'{"packs":[{"blobs":[]}]}',
        b"[1, 2]",
        b'"text"',
    ],
)
def test_malformed_index_files_raise(raw: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        decode_columns(raw)


# ----- through a repository ------------------------------------------------------------------


def _write(repo: Repository, payloads: list[bytes]) -> dict[str, list[PackedBlob]]:
    packer = Packer(repo.master, repo.write_pack, target_size=10**6)
    try:
        for payload in payloads:
            blob_id = hashlib.sha256(payload).hexdigest()
            packer.add(encode_blob(repo.master, blob_id, BlobType.DATA, payload, 3))
        packer.flush()
    finally:
        packer.close()
    return packer.take_finished()


@pytest.fixture
def local_repo(tmp_path: Path) -> Callable[[], Repository]:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, kdf=FAST)

    def reopen() -> Repository:
        return Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD)

    reopen.first = repo  # type: ignore[attr-defined]
    return reopen


def test_superseded_index_files_are_ignored(local_repo: Callable[[], Repository]) -> None:
    """An index that supersedes others hides them, as after a prune that stopped before it
    deleted the old files: only the packs of the live index are indexed."""
    repo: Repository = local_repo.first  # type: ignore[attr-defined]
    first = _write(repo, [b"one", b"two"])
    old = repo.save_index(first, [])
    second = _write(repo, [b"three"])
    repo.save_index(second, [])
    (pack_a,) = first
    (pack_b,) = second
    fresh = local_repo()
    assert set(fresh.index.packs) == {pack_a, pack_b}
    written = repo.save_index(second, supersedes=old)  # a 'prune' that dropped pack_a
    fresh = local_repo()
    assert set(fresh.index.packs) == {pack_b}
    assert not fresh.index.has(hashlib.sha256(b"one").hexdigest())
    assert fresh.load_blob(hashlib.sha256(b"three").hexdigest()) == b"three"
    files = fresh.load_index_files()  # all files, superseded ones too
    assert set(files) == {*old, *written, *repo.list_ids(FileType.INDEX)}
    report = Checker(local_repo()).run()
    assert report.errors == []
    assert any(pack_a[:8] in warning for warning in report.warnings)  # now unreferenced


def test_pending_packs_are_found_before_and_after_reopening(
    local_repo: Callable[[], Repository], small_tail: None
) -> None:
    repo: Repository = local_repo.first  # type: ignore[attr-defined]
    repo.save_index(_write(repo, [b"base %d" % n for n in range(100)]), [])
    repo = local_repo()
    assert repo.index.has(hashlib.sha256(b"base 7").hexdigest())  # sorted now
    for batch in range(5):  # a backup adding packs; the second batch forces a re-sort
        payloads = [b"new %d %d" % (batch, n) for n in range(30)]
        repo.save_index(_write(repo, payloads), [])
        for payload in payloads:
            assert repo.load_blob(hashlib.sha256(payload).hexdigest()) == payload
    assert len(repo.index) == 250
    assert len(local_repo().index) == 250


def test_unreadable_index_file_is_reported_by_check(local_repo: Callable[[], Repository]) -> None:
    repo: Repository = local_repo.first  # type: ignore[attr-defined]
    repo.save_index(_write(repo, [b"kept"]), [])
    bad = repo.save_unpacked(FileType.INDEX, b'{"packs":[{"blobs":[]}]}')
    report = Checker(local_repo()).run()
    assert any(bad in error and "corrupt" in error for error in report.errors)
    with pytest.raises(IntegrityError, match=bad):
        local_repo().index  # noqa: B018


def test_many_index_files_decode_on_worker_processes(
    local_repo: Callable[[], Repository], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From _PROCESS_MIN_FILES files on, workers decode; the index is the same as decoded in
    process, and a corrupt file is still named (by check) or raised (on open)."""
    repo: Repository = local_repo.first  # type: ignore[attr-defined]
    for batch in range(5):
        repo.save_index(_write(repo, [b"file %d %d" % (batch, n) for n in range(20)]), [])
    monkeypatch.setattr(index_module, "_PROCESS_MIN_FILES", 10**9)
    in_process = local_repo().index
    monkeypatch.setattr(index_module, "_PROCESS_MIN_FILES", 2)
    decoder = index_module.IndexDecoder(5)
    try:
        assert decoder._pool is not None, "no worker processes were started"
    finally:
        decoder.close()
    on_workers = local_repo().index
    assert list(on_workers.packs) == list(in_process.packs)
    assert list(on_workers.blob_ids()) == list(in_process.blob_ids())
    for pack_id in in_process.packs:
        assert on_workers.packs[pack_id] == in_process.packs[pack_id]
    bad = repo.save_unpacked(FileType.INDEX, b'{"packs":[{"id":"x","blobs":[{"id":"y"}]}]}')
    report = Checker(local_repo()).run()
    assert [error for error in report.errors if bad in error]
    assert report.packs_checked == 5
    with pytest.raises(IntegrityError, match=bad):
        local_repo().index  # noqa: B018
