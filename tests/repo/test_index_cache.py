"""The local index cache: a hit gives the same index as decoding the files, files added later
are merged, a rewritten index or a damaged, foreign or outdated cache is never trusted, and
backup, prune and restore through the CLI stay right with the cache on."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safehold.backends.local import LocalBackend
from safehold.repo import indexcache
from safehold.repo.crypto import MasterKey
from safehold.repo.format import FileType
from safehold.repo.index import BlobLocation, IndexColumns, IndexDecoder, IndexFile, MasterIndex
from safehold.repo.indexcache import CachedIndex, IndexCache
from safehold.repo.key import KdfParams
from safehold.repo.pack import BlobType, PackedBlob
from safehold.repo.repository import Repository

PASSWORD = b"index cache"
FAST = KdfParams(n=1024, r=8, p=1)
RunCli = Callable[..., subprocess.CompletedProcess[str]]


# ----- a repository of synthetic index files -------------------------------------------------


def _random_packs(
    rnd: random.Random, known: list[str], packs: int, per_pack: int
) -> dict[str, list[PackedBlob]]:
    result = {}
    for _ in range(packs):
        blobs, offset = [], rnd.choice([0, 0, 2**32 + 5])  # some offsets need 8-byte columns
        for _ in range(rnd.randint(1, per_pack)):
            if known and rnd.random() < 0.05:
                blob_id = rnd.choice(known)  # stored twice: a duplicate in another pack
            else:
                blob_id = rnd.randbytes(32).hex()
                known.append(blob_id)
            length = rnd.randint(40, 9000)
            blob_type = BlobType.TREE if rnd.random() < 0.1 else BlobType.DATA
            blobs.append(PackedBlob(blob_id, blob_type, offset, length, rnd.choice([None, 9999])))
            offset += length
        result[rnd.randbytes(32).hex()] = blobs
    return result


class Site:
    """A repository, its cache folder, and a count of the index files each open decoded."""

    def __init__(self, root: Path, seed: int) -> None:
        self.path = root / "repo"
        self.cache = IndexCache(root / "cache" / "index")
        self.rnd = random.Random(seed)
        self.known: list[str] = []
        self.repo = Repository.init(LocalBackend(str(self.path)), PASSWORD, kdf=FAST)
        self.decoded: list[str] = []

    def add_files(self, files: int, packs: int = 6, per_pack: int = 80) -> list[str]:
        written = []
        for _ in range(files):
            packs_of_file = _random_packs(self.rnd, self.known, packs, per_pack)
            written += self.repo.save_index(packs_of_file, [])
        return written

    def open(self, cached: bool = True) -> MasterIndex:
        """A fresh process's view: open the repository and load its index."""
        repo = Repository.open(LocalBackend(str(self.path)), PASSWORD)
        repo.index_cache = self.cache if cached else None
        decode = repo._decode_stored_index

        def counting(index_id: str, decoder: IndexDecoder) -> IndexColumns:
            self.decoded.append(index_id)
            return decode(index_id, decoder)

        repo._decode_stored_index = counting  # type: ignore[method-assign]
        self.decoded = []
        return repo.index

    def cache_file(self) -> Path:
        return self.cache.path(self.repo.config.id)

    def probes(self) -> list[str]:
        return [*self.known, *(self.rnd.randbytes(32).hex() for _ in range(50))]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path, seed=1)


def _assert_identical(index: MasterIndex, fresh: MasterIndex, probes: list[str]) -> None:
    """Exactly the same answers, duplicates and their order included."""
    for blob_id in probes:
        assert index.all_locations(blob_id) == fresh.all_locations(blob_id)
        assert index.lookup(blob_id) == fresh.lookup(blob_id)
    assert list(index.packs) == list(fresh.packs)
    for pack_id in fresh.packs:
        assert index.packs[pack_id] == fresh.packs[pack_id]
    assert len(index) == len(fresh)
    assert list(index.blob_ids()) == list(fresh.blob_ids())
    assert index.record_count() == fresh.record_count()


def _assert_equivalent(index: MasterIndex, fresh: MasterIndex, probes: list[str]) -> None:
    """The same locations for every blob (a duplicate's first copy may be another one when
    files were merged in another order) and the same packs."""

    def key(location: BlobLocation) -> tuple[str, int]:
        return (location.pack_id, location.blob.offset)

    for blob_id in probes:
        expected = sorted(fresh.all_locations(blob_id), key=key)
        assert sorted(index.all_locations(blob_id), key=key) == expected
        assert (index.lookup(blob_id) in expected) if expected else not index.has(blob_id)
    assert sorted(index.packs) == sorted(fresh.packs)
    for pack_id in fresh.packs:
        assert index.packs[pack_id] == fresh.packs[pack_id]
    assert len(index) == len(fresh)
    assert index.record_count() == fresh.record_count()


# ----- hits, merges, rebuilds ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_hit_answers_exactly_as_decoding_the_files(tmp_path: Path, seed: int) -> None:
    site = Site(tmp_path, seed)
    site.add_files(site.rnd.randint(3, 6), per_pack=site.rnd.choice([5, 80, 300]))
    cold = site.open()
    assert sorted(site.decoded) == sorted(site.repo.list_ids(FileType.INDEX))
    assert site.cache_file().is_file()
    warm = site.open()
    assert site.decoded == []  # nothing decoded: all from the cache
    fresh = site.open(cached=False)
    probes = site.probes()
    _assert_identical(warm, fresh, probes)
    _assert_identical(cold, fresh, probes)
    # the cached index keeps working as a live one: a backup adds packs to it
    more = _random_packs(site.rnd, site.known, 3, 50)
    for target in (warm, fresh):
        for pack_id, blobs in more.items():
            target.add_pack(pack_id, blobs)
    _assert_identical(warm, fresh, site.probes())


def test_index_files_added_later_are_merged_on_top(site: Site) -> None:
    site.add_files(4)
    site.open()
    new = site.add_files(2)
    merged = site.open()
    assert sorted(site.decoded) == sorted(new)  # only the new files
    _assert_equivalent(merged, site.open(cached=False), site.probes())
    site.open()
    assert sorted(site.decoded) == sorted(new)  # a few new records: no rewrite yet


def test_many_new_files_rewrite_the_cache(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexcache, "REWRITE_RECORDS", 100)
    site.add_files(2)
    site.open()
    site.add_files(3)
    site.open()
    assert len(site.decoded) == 3
    again = site.open()
    assert site.decoded == []  # the merge was written back
    _assert_equivalent(again, site.open(cached=False), site.probes())


def test_a_removed_index_file_makes_the_cache_stale(site: Site) -> None:
    files = site.add_files(4)
    site.open()
    # rewrite one file as prune or repair would: its packs, less one, in a new file
    columns = site.repo.load_index_file(files[0])
    packs = dict(columns.packs)
    dropped = next(iter(packs))
    del packs[dropped]
    site.repo.save_index(packs, [])
    site.repo.delete(FileType.INDEX, files[0])
    index = site.open()
    assert sorted(site.decoded) == sorted(site.repo.list_ids(FileType.INDEX))  # all again
    assert dropped not in index.packs
    fresh = site.open(cached=False)
    _assert_identical(index, fresh, site.probes())
    rebuilt = site.open()
    assert site.decoded == []  # and the rebuilt cache is used
    _assert_identical(rebuilt, fresh, site.probes())


def test_superseded_files_stay_hidden_and_prune_finishing_is_followed(site: Site) -> None:
    """An interrupted prune: a new index file supersedes the old ones, which still exist."""
    old = site.add_files(3)
    site.open()
    keep: dict[str, list[PackedBlob]] = {}
    for index_id in old:
        for pack_id, blobs in site.repo.load_index_file(index_id).packs.items():
            if len(keep) < 10:
                keep[pack_id] = blobs
    site.repo.save_index(keep, old)  # supersedes every old file
    index = site.open()
    assert sorted(index.packs) == sorted(keep)
    _assert_identical(index, site.open(cached=False), site.probes())
    hit = site.open()
    assert site.decoded == []
    assert sorted(hit.packs) == sorted(keep)
    for index_id in old:  # the prune finishes
        site.repo.delete(FileType.INDEX, index_id)
    index = site.open()
    assert sorted(index.packs) == sorted(keep)
    _assert_identical(index, site.open(cached=False), site.probes())


def test_a_small_repository_is_not_cached(site: Site) -> None:
    site.add_files(1, packs=1, per_pack=5)
    site.open()
    assert not site.cache_file().exists()


def test_a_stale_cache_too_small_to_rewrite_is_removed(site: Site) -> None:
    files = site.add_files(2, packs=1, per_pack=5)
    site.open()
    assert site.cache_file().is_file()
    site.repo.delete(FileType.INDEX, files[0])
    index = site.open()
    assert not site.cache_file().exists()
    _assert_identical(index, site.open(cached=False), site.probes())


# ----- a cache never trusted over the repository ---------------------------------------------


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


def _flip(path: Path, where: Callable[[int], int]) -> None:
    data = bytearray(path.read_bytes())
    data[where(len(data))] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "empty": lambda path: _rewrite(path, lambda data: b""),
    "garbage": lambda path: _rewrite(path, lambda data: os.urandom(5000)),
    "truncated in the header": lambda path: _rewrite(path, lambda data: data[:40]),
    "truncated in the arrays": lambda path: _rewrite(path, lambda data: data[:-5000]),
    "one byte short": lambda path: _rewrite(path, lambda data: data[:-1]),
    "one byte longer": lambda path: _rewrite(path, lambda data: data + b"\0"),
    "flipped in the IV": lambda path: _flip(path, lambda size: 3),
    "flipped in the header": lambda path: _flip(path, lambda size: 30),
    "flipped in the arrays": lambda path: _flip(path, lambda size: size // 2),
    "flipped in the MAC": lambda path: _flip(path, lambda size: size - 2),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_ignored_and_rebuilt(site: Site, damage: str) -> None:
    site.add_files(3)
    site.open()
    DAMAGE[damage](site.cache_file())
    index = site.open()
    assert sorted(site.decoded) == sorted(site.repo.list_ids(FileType.INDEX))
    fresh = site.open(cached=False)
    _assert_identical(index, fresh, site.probes())
    rebuilt = site.open()
    assert site.decoded == []
    _assert_identical(rebuilt, fresh, site.probes())


def test_a_cache_of_another_key_is_ignored(site: Site) -> None:
    """A cache under this repository's id, written with another key (a different repository
    that claims the same id), authenticates with neither header nor arrays."""
    site.add_files(3)
    other = site.open()
    listed = set(site.repo.list_ids(FileType.INDEX))
    entry = CachedIndex(other, frozenset(listed))
    assert site.cache.save(MasterKey.generate(), site.repo.config.id, entry)
    assert site.cache.load(site.repo.master, site.repo.config.id, listed) is None
    site.open()
    assert len(site.decoded) == 3
    site.open()
    assert site.decoded == []


def test_a_cache_of_another_repository_or_version_is_ignored(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = site.add_files(3)
    index = site.open()
    listed = set(files)
    entry = CachedIndex(index, frozenset(files))
    # the same key, another repository id (a copy of the key file elsewhere): not this one's
    foreign = site.cache.path("ab" * 32)
    assert site.cache.save(site.repo.master, "ab" * 32, entry)
    os.replace(foreign, site.cache_file())
    assert site.cache.load(site.repo.master, site.repo.config.id, listed) is None
    # a file of another version of the cache layout
    monkeypatch.setattr(indexcache, "CACHE_VERSION", 99)
    assert site.cache.save(site.repo.master, site.repo.config.id, entry)
    monkeypatch.undo()
    assert site.cache.load(site.repo.master, site.repo.config.id, listed) is None
    site.open()
    assert len(site.decoded) == 3
    assert site.cache.load(site.repo.master, site.repo.config.id, listed) is not None


def test_the_cache_holds_no_id_in_clear(site: Site) -> None:
    files = site.add_files(3)
    site.open()
    data = site.cache_file().read_bytes()
    index = site.open(cached=False)
    for blob_id in site.known[:500]:
        assert bytes.fromhex(blob_id) not in data and blob_id.encode() not in data
    for pack_id in list(index.packs)[:20]:
        assert pack_id.encode() not in data and bytes.fromhex(pack_id) not in data
    for index_id in files:
        assert index_id.encode() not in data


def test_an_unwritable_cache_folder_is_no_error(site: Site) -> None:
    site.add_files(3)
    site.cache.directory.parent.mkdir(parents=True)
    site.cache.directory.write_text("a file where the folder should be")
    index = site.open()
    _assert_identical(index, site.open(cached=False), site.probes())


def test_concurrent_writers_leave_one_whole_cache(site: Site) -> None:
    """Two writers at once (two processes opening the same repository): the file is always
    one of theirs, whole, and loads."""
    files = site.add_files(3)
    index = site.open(cached=False)
    listed = set(files)
    entry = CachedIndex(index, frozenset(files))
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(15):
                assert site.cache.save(site.repo.master, site.repo.config.id, entry)
        except BaseException as err:
            errors.append(err)

    writers = [threading.Thread(target=write) for _ in range(2)]
    for thread in writers:
        thread.start()
    reads = 0
    while any(thread.is_alive() for thread in writers):
        if site.cache_file().exists():
            assert site.cache.load(site.repo.master, site.repo.config.id, listed) is not None
            reads += 1
    for thread in writers:
        thread.join()
    assert not errors
    loaded = site.cache.load(site.repo.master, site.repo.config.id, listed)
    assert loaded is not None
    _assert_identical(loaded.index, index, site.probes())
    assert [p.name for p in site.cache.directory.iterdir()] == [site.cache_file().name]


def test_a_killed_writers_temp_file_is_cleaned_up(site: Site) -> None:
    site.add_files(3)
    site.cache.directory.mkdir(parents=True)
    leftover = site.cache.directory / f".{site.cache_file().name}.killed.tmp"
    leftover.write_bytes(b"half a cache")
    os.utime(leftover, (1, 1))
    recent = site.cache.directory / f".{site.cache_file().name}.writing.tmp"
    recent.write_bytes(b"another writer, still at work")
    site.open()
    assert not leftover.exists() and recent.exists()


# ----- through the CLI: backup, prune, restore with the cache on ---------------------------


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_backup_prune_restore_through_the_cli(
    run_cli: RunCli, tmp_path: Path, safehold_cache_dir: Path
) -> None:
    repo, src = tmp_path / "repo", tmp_path / "src"
    src.mkdir()

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        proc = run_cli("-r", str(repo), *map(str, args))
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    run("init")
    for number in range(40):
        (src / f"keep-{number}.txt").write_text(f"kept file {number}\n" * (number + 1))
    (src / "doomed.bin").write_bytes(os.urandom(800_000))
    run("backup", src)
    (src / "doomed.bin").unlink()
    (src / "late.bin").write_bytes(os.urandom(300_000))
    run("backup", src)
    run("backup", src)
    cache_files = list((safehold_cache_dir / "index").iterdir())
    assert len(cache_files) == 1  # written by the second backup's open (two index files)
    written = cache_files[0].stat().st_mtime_ns
    first_id = json.loads(run("snapshots", "--json").stdout)[0]["id"]
    run("forget", first_id)
    run("prune")
    assert "no errors were found" in run("check", "--read-data").stdout
    target = tmp_path / "restore"
    run("restore", "latest", "--target", target)
    restored = target / src.relative_to("/")
    assert _digest(restored) == _digest(src)
    assert not (restored / "doomed.bin").exists()
    # prune rewrote the index: the cache was rebuilt (or removed), never used stale
    now = list((safehold_cache_dir / "index").iterdir())
    assert not now or now[0].stat().st_mtime_ns != written
    run("backup", src)
    run("backup", src)
    target2 = tmp_path / "restore2"
    run("restore", "latest", "--target", target2)
    assert _digest(target2 / src.relative_to("/")) == _digest(src)


def test_index_files_without_blobs_cache_too(site: Site) -> None:
    """Empty index files (prune writes one when nothing is left) and a pack of no blobs."""
    site.repo.save_unpacked(FileType.INDEX, IndexFile().encode())
    site.repo.save_unpacked(FileType.INDEX, IndexFile(packs={"cd" * 32: []}).encode())
    site.open()
    assert site.cache_file().is_file()
    warm = site.open()
    assert site.decoded == []
    assert warm.record_count() == 0 and list(warm.packs) == ["cd" * 32]
    assert not warm.has("00" * 32)
    site.add_files(2)
    merged = site.open()
    _assert_equivalent(merged, site.open(cached=False), site.probes())


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "a column entry too short": lambda header: header["columns"][0].pop(),
    "a column missing": lambda header: header["columns"].pop(),
    "a column twice": lambda header: header["columns"].append(header["columns"][0]),
    "an unknown typecode": lambda header: header["columns"][2].__setitem__(1, "d"),
    "files not a list": lambda header: header.__setitem__("files", "abc"),
    "no pack table size": lambda header: header.pop("pack_ids_bytes"),
    "columns not a list": lambda header: header.__setitem__("columns", {}),
}


@pytest.mark.parametrize("change", sorted(MALFORMED))
def test_an_authentic_but_malformed_cache_is_ignored(site: Site, change: str) -> None:
    """Structure is checked even when the MAC is good (a writer's bug; or a forged header,
    since CTR lets bits be flipped in a known plaintext, caught by the MAC in the end)."""
    site.add_files(3)
    site.open()
    path = site.cache_file()
    plaintext = site.repo.master.decrypt_object(path.read_bytes())
    size = int.from_bytes(plaintext[:4], "little")
    header = json.loads(plaintext[4 : 4 + size])
    MALFORMED[change](header)
    encoded = json.dumps(header).encode()
    rest = plaintext[4 + size :]
    path.write_bytes(
        site.repo.master.encrypt_object(len(encoded).to_bytes(4, "little") + encoded + rest)
    )
    listed = set(site.repo.list_ids(FileType.INDEX))
    assert site.cache.load(site.repo.master, site.repo.config.id, listed) is None
    index = site.open()
    assert len(site.decoded) == 3
    _assert_identical(index, site.open(cached=False), site.probes())
