"""The local index cache: a repository opened before does not decode its index files again.

After the index files are decoded, the master index's arrays (ids, pack numbers, offsets,
lengths, the pack id table and the sorted search arrays) go to one file per repository under
the cache directory, with the exact set of index files they were built from. The next open
lists the index files (it must anyway) and, when every file of the cache is still there,
reads the arrays straight from the cache: no JSON, no per-blob Python, no sort. Index files
added since (a backup writes one) are decoded and merged on top; a cached file that is gone
(prune or repair rewrote the index) makes the cache stale, and the index is decoded again.

The file is encrypted and authenticated with the repository's master key, exactly as a
repository file is (AES-256-CTR, Poly1305-AES over the ciphertext: crypto.py): the blob ids
are content hashes of the user's data and must not lie on local disk in clear. A cache that
is missing, truncated, tampered with, written by another key, repository or version, or by a
machine of the other byte order is ignored (and rewritten): it is never trusted over the
repository, and never an error. The layout is in docs/format.md, "The local index cache".

The cache is derived from content-addressed files (an index file's name is the hash of its
bytes), so "the same set of names" means "the same index": a copied repository that shares
the id and key reads the same cache correctly.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from safehold.repo.cachedir import cache_dir
from safehold.repo.crypto import IV_SIZE, MAC_SIZE, AuthenticationError, MasterKey
from safehold.repo.format import hash_id
from safehold.repo.index import IndexArrays, MasterIndex

CACHE_VERSION = 1
_FORMAT = "safehold-index-cache"
_CHUNK = 1 << 20  # bytes en/decrypted at a time: memory stays at the arrays themselves
_MAX_HEADER = 256 << 20
_STALE_TEMP_SECONDS = 600.0  # a temp file this old is a writer's that was killed
# Each column: the typecodes it may have. The search arrays and pack numbers are 4-byte.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "ids": ("B",),
    "types": ("B",),
    "pack_of": ("I",),
    "offsets": ("I", "Q"),
    "lengths": ("I", "Q"),
    "uncompressed": ("I", "Q"),
    "prefixes": ("I",),
    "order": ("I",),
    "pack_sizes": ("I",),
}
_CACHE_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    AuthenticationError,
)
_REPOSITORY_ID = re.compile(r"[0-9a-f]{64}")

# When a cache is worth writing: from this many records, or index files (each one a request
# on remote storage). One small index file decodes as fast as the cache reads.
MIN_RECORDS = 10_000
MIN_FILES = 2
# When a cache with index files added since is rewritten: when the new records are a share
# the index re-sorts for anyway (index.py: _MIN_TAIL, _TAIL_SHARE), or after this many files.
REWRITE_RECORDS = 32_768
REWRITE_SHARE = 8
REWRITE_FILES = 16


@dataclass(frozen=True)
class CachedIndex:
    """A master index and the index files it stands for."""

    index: MasterIndex
    files: frozenset[str]  # the index files merged into it
    hidden: frozenset[str] = frozenset()  # listed files it left out: superseded by others
    superseded: frozenset[str] = frozenset()  # every id its files name as superseded


class IndexCache:
    """The index cache files under `directory`, one per repository id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def in_cache_dir(cls, environ: Mapping[str, str] = os.environ) -> IndexCache:
        return cls(cache_dir(environ) / "index")

    def path(self, repository_id: str) -> Path:
        name = repository_id
        if not _REPOSITORY_ID.fullmatch(name):  # never a path from the repository's config
            name = hash_id(repository_id.encode())
        return self.directory / name  # the version is inside: a new one replaces an old

    def load(self, master: MasterKey, repository_id: str, listed: Set[str]) -> CachedIndex | None:
        """The cached index of the repository, if the cache is intact and authentic and every
        index file it was built from is in `listed`; None otherwise (never raises)."""
        try:
            with open(self.path(repository_id), "rb") as source:
                return _read(source, master, repository_id, listed)
        except _CACHE_ERRORS:
            return None

    def save(self, master: MasterKey, repository_id: str, cached: CachedIndex) -> bool:
        """Write the cache atomically (temp file, fsync, rename: a concurrent writer's file
        or this one wins whole). Sorts the index if it is not sorted yet. False if it could
        not be written (no space, no permission): the next open decodes the index again."""
        path = self.path(repository_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _remove_stale_temps(path)
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError:
            return False
        try:
            with os.fdopen(handle, "wb") as out:
                _write(out, master, repository_id, cached)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except OSError:
            _unlink(Path(temp))
            return False
        except BaseException:
            _unlink(Path(temp))
            raise
        return True

    def discard(self, repository_id: str) -> None:
        """Remove the repository's cache (it is stale and not worth rewriting)."""
        _unlink(self.path(repository_id))


def worth_writing(records: int, files: int) -> bool:
    return records >= MIN_RECORDS or files >= MIN_FILES


def worth_rewriting(cached_records: int, new_records: int, new_files: int) -> bool:
    share = max(REWRITE_RECORDS, cached_records // REWRITE_SHARE)
    return new_records > share or new_files >= REWRITE_FILES


# ----- the file --------------------------------------------------------------------------------


def _write(out: BinaryIO, master: MasterKey, repository_id: str, cached: CachedIndex) -> None:
    arrays = cached.index.arrays()
    pack_ids = json.dumps(arrays.pack_ids, separators=(",", ":")).encode()
    columns: list[tuple[str, bytearray | array[int]]] = [
        ("ids", arrays.ids),
        ("types", arrays.types),
        ("pack_of", arrays.pack_of),
        ("offsets", arrays.offsets),
        ("lengths", arrays.lengths),
        ("uncompressed", arrays.uncompressed),
        ("prefixes", arrays.prefixes),
        ("order", arrays.order),
        ("pack_sizes", arrays.pack_sizes),
    ]
    header = {
        "format": _FORMAT,
        "version": CACHE_VERSION,
        "repository": repository_id,
        "byteorder": sys.byteorder,
        "files": sorted(cached.files),
        "hidden": sorted(cached.hidden),
        "superseded": sorted(cached.superseded),
        "records": arrays.record_count(),
        "pack_ids_bytes": len(pack_ids),
        "columns": [
            [name, _typecode(column), len(column) * _itemsize(column)] for name, column in columns
        ],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encryptor = master.stream_encryptor()
    out.write(encryptor.iv)
    out.write(encryptor.update(len(encoded).to_bytes(4, "little") + encoded))
    out.write(encryptor.update(pack_ids))
    for _, column in columns:
        with memoryview(column) as view, view.cast("B") as raw:
            for start in range(0, len(raw), _CHUNK):
                out.write(encryptor.update(raw[start : start + _CHUNK]))
    out.write(encryptor.finalize())


def _read(
    source: BinaryIO, master: MasterKey, repository_id: str, listed: Set[str]
) -> CachedIndex | None:
    """Read and authenticate a cache file. Cheap checks on the (not yet authenticated) header
    may reject it early; nothing is used before the MAC over the whole file is verified."""
    size = os.fstat(source.fileno()).st_size
    body = size - IV_SIZE - MAC_SIZE
    if body < 4:
        return None
    decryptor = master.stream_decryptor(source.read(IV_SIZE))
    left = body

    def take(count: int) -> bytes:
        nonlocal left
        if count > left:
            raise ValueError("the index cache is truncated")
        ciphertext = source.read(count)
        if len(ciphertext) != count:
            raise ValueError("the index cache is truncated")
        left -= count
        return decryptor.update(ciphertext)

    header_size = int.from_bytes(take(4), "little")
    if header_size > min(left, _MAX_HEADER):
        return None  # another key's file decrypts to noise: this is where it usually ends
    header = json.loads(take(header_size))
    if (
        not isinstance(header, dict)
        or header.get("format") != _FORMAT
        or header.get("version") != CACHE_VERSION
        or header.get("repository") != repository_id
        or header.get("byteorder") != sys.byteorder
    ):
        return None
    files, hidden, superseded = (_names(header[key]) for key in ("files", "hidden", "superseded"))
    if not (files <= listed and hidden <= listed):
        return None  # an index file it was built from is gone: stale
    layout = header["columns"]
    pack_ids_bytes = header["pack_ids_bytes"]
    if not isinstance(layout, list) or not isinstance(pack_ids_bytes, int):
        return None
    if pack_ids_bytes + sum(int(entry[2]) for entry in layout) != left:
        return None
    pack_ids = json.loads(take(pack_ids_bytes))
    if not isinstance(pack_ids, list) or not all(isinstance(item, str) for item in pack_ids):
        return None
    columns: dict[str, bytearray | array[int]] = {}
    for name, typecode, byte_count in layout:
        if typecode not in _COLUMNS.get(name, ()) or name in columns:
            return None
        columns[name] = _read_column(take, typecode, byte_count)
    if set(columns) != set(_COLUMNS) or left:
        return None
    decryptor.verify(source.read(MAC_SIZE))
    index = MasterIndex.from_arrays(
        IndexArrays(
            pack_ids=pack_ids,
            pack_sizes=_ints(columns["pack_sizes"]),
            ids=_bytes(columns["ids"]),
            types=_bytes(columns["types"]),
            pack_of=_ints(columns["pack_of"]),
            offsets=_ints(columns["offsets"]),
            lengths=_ints(columns["lengths"]),
            uncompressed=_ints(columns["uncompressed"]),
            prefixes=_ints(columns["prefixes"]),
            order=_ints(columns["order"]),
        )
    )
    return CachedIndex(index, files, hidden, superseded)


def _read_column(
    take: Callable[[int], bytes], typecode: str, byte_count: object
) -> bytearray | array[int]:
    """One column, decrypted a chunk at a time straight into its final buffer."""
    if not isinstance(byte_count, int) or byte_count < 0:
        raise ValueError("a column size is not a count")
    column: bytearray | array[int]
    if typecode == "B":
        column = bytearray(byte_count)
    else:
        itemsize = array(typecode).itemsize
        if byte_count % itemsize:
            raise ValueError("a column size is not a whole number of items")
        column = array(typecode, [0]) * (byte_count // itemsize)
    with memoryview(column) as view, view.cast("B") as raw:
        for start in range(0, byte_count, _CHUNK):
            piece = take(min(_CHUNK, byte_count - start))
            raw[start : start + len(piece)] = piece
    return column


def _names(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("a list of index files is not a list of names")
    return frozenset(value)


def _bytes(column: bytearray | array[int]) -> bytearray:
    if not isinstance(column, bytearray):
        raise TypeError("a byte column is an int column")
    return column


def _ints(column: bytearray | array[int]) -> array[int]:
    if not isinstance(column, array):
        raise TypeError("an int column is a byte column")
    return column


def _typecode(column: bytearray | array[int]) -> str:
    return "B" if isinstance(column, bytearray) else column.typecode


def _itemsize(column: bytearray | array[int]) -> int:
    return 1 if isinstance(column, bytearray) else column.itemsize


def _remove_stale_temps(path: Path) -> None:
    """Temp files of writers killed mid-write (each can be as large as the cache)."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    try:
        leftovers = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return
    for leftover in leftovers:
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            continue


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        return
