"""Index files: which pack holds which blob, at what offset, so no pack header must be read.

    {"supersedes": [index ids], "packs": [{"id": pack, "blobs": [{"id", "type", "offset",
     "length", "uncompressed_length"?}]}]}

The index is derived data: every entry can be rebuilt from pack headers (`check`/`repair`).

In memory the master index is columnar, with no Python object per blob: the 32-byte blob ids
back to back in one bytearray, and parallel `array` columns for the pack number, offset,
length and uncompressed length (about 57 bytes per blob with the search arrays; restic needs
about 96). Lookups binary-search a sorted array of 30-bit id prefixes (`bisect` in C) and
compare the full id. Blobs added after the last sort (the packs a backup writes) sit in a
small dict until they are a sizeable share, then everything is sorted again. A blob stored
twice (two concurrent backups) keeps every location so prune can drop the extra copy; the
first location added is the one `lookup` returns.

Index files decode straight into columns (`decode_columns`): the canonical compact layout
that restic and safehold write is read with two regular expressions and C-level conversions;
anything else (other key orders, whitespace, restic's legacy list format) goes through
`json.loads`, with the same result.
"""

from __future__ import annotations

import binascii
import gc
import json
import multiprocessing
import os
import re
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import accumulate, chain

from safehold.errors import IntegrityError
from safehold.repo.crypto import MasterKey
from safehold.repo.format import encode_json, open_unpacked
from safehold.repo.pack import BlobType, PackedBlob
from safehold.runtime import die_with_parent

MAX_BLOBS_PER_INDEX_FILE = 50_000
ID_SIZE = 32
_MIN_TAIL = 32_768  # blobs added since the last sort that stay in the dict before a re-sort
_TAIL_SHARE = 8  # ... or this fraction of the sorted blobs, whichever is larger

if array("I").itemsize != 4:  # pragma: no cover - every platform safehold runs on
    raise ImportError("safehold's index needs a 4-byte array('I')")

_TYPE_CODES = {BlobType.DATA: 0, BlobType.TREE: 1}
_CODE_TYPES = (BlobType.DATA, BlobType.TREE)


def _uint_array(values: Iterable[int]) -> array[int]:
    """A 4-byte unsigned column, or 8-byte if a value does not fit (offsets of huge packs)."""
    items = values if isinstance(values, list | tuple) else list(values)
    try:
        return array("I", items)
    except OverflowError:
        return array("Q", items)


def _extend(column: array[int], more: array[int]) -> array[int]:
    """`column` extended by `more`, widened to 8 bytes when either needs it."""
    if more.typecode != column.typecode:
        if column.typecode == "I":
            column = array("Q", column)
        else:
            more = array("Q", more)
    column.extend(more)
    return column


@dataclass(frozen=True)
class BlobLocation:
    pack_id: str
    blob: PackedBlob


@dataclass
class IndexColumns:
    """One index file decoded into columns. Blobs are in file order, pack after pack:
    pack `k` owns the next `pack_sizes[k]` blobs."""

    supersedes: list[str] = field(default_factory=list)
    pack_ids: list[str] = field(default_factory=list)
    pack_sizes: array[int] = field(default_factory=lambda: array("I"))
    ids: bytes = b""  # ID_SIZE bytes per blob
    types: bytes = b""  # one byte per blob: 0 data, 1 tree
    offsets: array[int] = field(default_factory=lambda: array("I"))
    lengths: array[int] = field(default_factory=lambda: array("I"))
    uncompressed: array[int] = field(default_factory=lambda: array("I"))  # 0: not compressed
    # Optional, filled by the decoder's workers: array("Q") bytes of every blob's search key
    # and number in this file, `_prefix(id) << 32 | blob`, ascending (see sorted_keys).
    sorted_keys: bytes = b""

    def blob_count(self) -> int:
        return len(self.types)

    @property
    def packs(self) -> dict[str, list[PackedBlob]]:
        """The packs as PackedBlob lists: one object per blob, for small uses (copy, tests)."""
        packs: dict[str, list[PackedBlob]] = {}
        start = 0
        for pack_id, size in zip(self.pack_ids, self.pack_sizes, strict=True):
            packs.setdefault(pack_id, []).extend(_blobs(self, start, start + size))
            start += size
        return packs


def _blobs(columns: IndexColumns | MasterIndex, start: int, end: int) -> list[PackedBlob]:
    ids: bytes | bytearray
    types: bytes | bytearray
    if isinstance(columns, IndexColumns):
        ids, types = columns.ids, columns.types
        offsets, lengths, unc = columns.offsets, columns.lengths, columns.uncompressed
    else:
        ids, types = columns._ids, columns._types
        offsets, lengths, unc = columns._offsets, columns._lengths, columns._uncompressed
    raw = ids[start * ID_SIZE : end * ID_SIZE].hex()
    step = 2 * ID_SIZE
    return [
        PackedBlob(raw[k * step : (k + 1) * step], _CODE_TYPES[code], offset, length, ulen or None)
        for k, (code, offset, length, ulen) in enumerate(
            zip(
                types[start:end],
                offsets[start:end],
                lengths[start:end],
                unc[start:end],
                strict=True,
            )
        )
    ]


_HEAD = re.compile(rb'\{(?:"supersedes":(\[[^\]]*\]|null),)?"packs":\[')
_PACK_OPEN = b'{"id":"'
_PACK_TAIL = b'","blobs":['
_HEX_ID = re.compile(rb"[0-9a-f]{64}")
# Any 64 bytes for a blob id (twice as fast to match as a class), then unhexlify accepts
# only hex digits: the same ids as [0-9a-fA-F]{64}, read as json.loads + unhexlify would.
_BLOB = re.compile(
    rb'\{"id":"(.{64})","type":"(data|tree)","offset":(\d+),"length":(\d+)'
    rb'(?:,"uncompressed_length":(\d+))?\}',
    re.DOTALL,
)


def decode_columns(raw: bytes) -> IndexColumns:
    """Decode an index file into columns; raises ValueError/KeyError if it is malformed."""
    columns = _decode_canonical(raw)
    if columns is None:
        columns = _decode_json(json.loads(raw))
    return columns


DECODE_ERRORS = (ValueError, KeyError, TypeError, AttributeError)  # what a bad file raises
_PROCESS_MIN_FILES = 4  # from this many index files (~200,000 blobs) on, decode in processes
_MAX_WORKERS = 4


class IndexDecoder:
    """Decodes index files on worker processes when there are many of them, in the calling
    thread otherwise. Decoding is pure Python and holds the GIL, so threads cannot share it
    out; forked workers can (2 cores: half the time). Given the repository's key, a worker
    also checks, decrypts and decompresses the stored file (`decode_stored`) and sorts its
    blobs' search keys (`sorted_keys`), so the master index only merges presorted runs: the
    process that opens the repository does little more than read files and append columns.
    Create it before starting threads: the workers are forked at once, from a process that
    has as few threads as possible, and inherit the key. The workers die with the thread
    that created the decoder (see safehold.runtime.die_with_parent)."""

    def __init__(self, files: int, key: MasterKey | None = None) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._key = key
        workers = min(os.cpu_count() or 1, _MAX_WORKERS)
        if files >= _PROCESS_MIN_FILES and workers > 1 and sys.platform.startswith("linux"):
            try:
                self._pool = ProcessPoolExecutor(
                    workers,
                    multiprocessing.get_context("fork"),
                    initializer=_start_worker,
                    initargs=(os.getpid(), key),  # fork: inherited, never pickled
                )
                self._pool.submit(int).result()  # fork the workers now, before any thread
            except (OSError, BrokenProcessPool):
                self.close()

    def decode_stored(self, data: bytes, object_id: str, name: str) -> IndexColumns | str:
        """Check, decrypt, decompress and decode the stored index file `data` (`name`, whose
        content must hash to `object_id`), with its sorted keys; a string says what is
        damaged (blocks until done; call it from a loader thread)."""
        if self._key is None:
            raise ValueError("decode_stored needs the decoder to be given the key")
        if self._pool is not None:
            try:
                return self._pool.submit(_decode_stored_here, data, object_id, name).result()
            except BrokenProcessPool:  # a worker died (out of memory?): decode here instead
                pass
        return decode_stored(self._key, data, object_id, name)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> IndexDecoder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_worker_key: MasterKey | None = None  # in a decoder's worker: the repository's key


def _start_worker(parent: int, key: MasterKey | None) -> None:
    global _worker_key
    die_with_parent(parent)
    _worker_key = key
    # Decoding makes a tuple per blob and frees it by reference counting: no cycles to
    # collect, and a collection would walk (and copy) the whole heap inherited at the fork.
    gc.disable()


def _decode_stored_here(data: bytes, object_id: str, name: str) -> IndexColumns | str:
    assert _worker_key is not None
    return decode_stored(_worker_key, data, object_id, name)


def decode_stored(key: MasterKey, data: bytes, object_id: str, name: str) -> IndexColumns | str:
    """A stored index file decoded into columns with its sorted keys, or a string saying
    what is damaged: its content does not hash to its name, it fails authentication, or it
    does not decode (the messages Repository.load_unpacked and decode errors give)."""
    try:
        raw = open_unpacked(key, data, object_id, name)
    except IntegrityError as err:
        return err.message
    try:
        columns = decode_columns(raw)
    except DECODE_ERRORS as err:
        return f"{name} is corrupt: {err}"
    columns.sorted_keys = sorted_keys(columns.ids)
    return columns


_LOW_WORD = 0 if sys.byteorder == "little" else 1  # where a 64-bit word's low half is


def sorted_keys(ids: bytes | bytearray) -> bytes:
    """array("Q") bytes of `_prefix(id) << 32 | n` for every id `n` of `ids`, ascending (so
    equal prefixes stay in id order): a run MasterIndex._sort merges without per-record
    work beyond one addition. Built with strided copies, then one sort of Python ints."""
    count = len(ids) // ID_SIZE
    if not count:
        return b""
    with memoryview(ids) as view, view.cast("I") as words:
        raw_keys = bytearray(words[:: ID_SIZE // 4].tobytes())  # each id's first 4 bytes
    raw_keys[_TOP_BYTE::4] = raw_keys[_TOP_BYTE::4].translate(_LOW_SIX_BITS)
    combined = bytearray(8 * count)
    with memoryview(combined) as view, view.cast("I") as halves:
        halves[_LOW_WORD::2] = array("I", range(count))
        halves[1 - _LOW_WORD :: 2] = memoryview(raw_keys).cast("I")
    keys = array("Q")
    keys.frombytes(combined)
    return array("Q", sorted(keys)).tobytes()


def _decode_canonical(raw: bytes) -> IndexColumns | None:
    """The fast path for the compact layout restic and safehold write, or None when `raw` is
    laid out otherwise. Accepts only what json.loads would read the same way: every object
    and every id in the file must be one that the patterns matched."""
    head = _HEAD.match(raw)
    if head is None or not raw.endswith(b"]}"):
        return None
    pack_ids: list[str] = []
    starts: list[int] = []  # where each pack object begins
    bodies: list[int] = []  # where its blob list begins
    position = raw.find(_PACK_TAIL, head.end())
    while position >= 0:
        start = position - 2 * ID_SIZE - len(_PACK_OPEN)
        if start < head.end() or not raw.startswith(_PACK_OPEN, start):
            return None
        if _HEX_ID.fullmatch(raw, start + len(_PACK_OPEN), position) is None:
            return None
        pack_ids.append(raw[start + len(_PACK_OPEN) : position].decode())
        starts.append(start)
        bodies.append(position + len(_PACK_TAIL))
        position = raw.find(_PACK_TAIL, bodies[-1])
    ends = [*starts[1:], len(raw)][: len(starts)]
    per_pack = [_BLOB.findall(raw, body, end) for body, end in zip(bodies, ends, strict=True)]
    blobs = sum(len(found) for found in per_pack)
    nonempty = sum(1 for found in per_pack if found)
    # Every object must be the top level, a pack or a blob matched above, and every pair of
    # neighbours separated by exactly one comma: then json.loads reads the same.
    if raw.count(b"{") != 1 + len(pack_ids) + blobs or raw.count(b"},{") != (
        blobs - nonempty + max(len(pack_ids) - 1, 0)
    ):
        return None
    supersedes: list[str] = []
    if head.group(1) not in (None, b"null"):
        listed = json.loads(head.group(1))
        if not all(isinstance(item, str) for item in listed):
            return None
        supersedes = listed
    columns = IndexColumns(
        supersedes=supersedes,
        pack_ids=pack_ids,
        pack_sizes=array("I", [len(found) for found in per_pack]),
    )
    if blobs:
        ids, types, offsets, lengths, unc = zip(*chain.from_iterable(per_pack), strict=True)
        try:
            columns.ids = binascii.unhexlify(b"".join(ids))
        except binascii.Error:  # not hex: let json.loads and its checks say what is wrong
            return None
        columns.types = bytes(map(b"tree".__eq__, types))
        columns.offsets = _uint_array(map(int, offsets))
        columns.lengths = _uint_array(map(int, lengths))
        columns.uncompressed = _uint_array([int(value) if value else 0 for value in unc])
    return columns


def _decode_json(value: object) -> IndexColumns:
    if isinstance(value, list):  # restic's legacy index format: a bare list of packs
        value = {"packs": value}
    if not isinstance(value, dict):
        raise ValueError("an index file is a JSON object")
    columns = IndexColumns(supersedes=[str(item) for item in value.get("supersedes") or []])
    ids: list[str] = []
    types = bytearray()
    offsets: list[int] = []
    lengths: list[int] = []
    unc: list[int] = []
    sizes: list[int] = []
    for pack in value.get("packs") or []:
        columns.pack_ids.append(str(pack["id"]))
        blobs = pack.get("blobs") or []
        sizes.append(len(blobs))
        for blob in blobs:
            ids.append(str(blob["id"]))
            types.append(_TYPE_CODES[BlobType(blob["type"])])
            offsets.append(int(blob["offset"]))
            lengths.append(int(blob["length"]))
            unc.append(int(blob.get("uncompressed_length") or 0))
    if any(len(blob_id) != 2 * ID_SIZE for blob_id in ids):
        raise ValueError("a blob id is not 64 hex digits")
    columns.pack_sizes = array("I", sizes)
    columns.ids = binascii.unhexlify("".join(ids))
    columns.types = bytes(types)
    columns.offsets = _uint_array(offsets)
    columns.lengths = _uint_array(lengths)
    columns.uncompressed = _uint_array(unc)
    return columns


@dataclass
class IndexFile:
    """An index file as PackedBlob lists: what the writers build (a few packs at a time)."""

    packs: dict[str, list[PackedBlob]] = field(default_factory=dict)
    supersedes: list[str] = field(default_factory=list)

    def blob_count(self) -> int:
        return sum(len(blobs) for blobs in self.packs.values())

    def encode(self) -> bytes:
        """The file's JSON, as encode_json writes it (the same bytes), built as text
        without the per-blob dicts and the encoder's per-value dispatch (~1.3x faster; it
        runs serially at the end of a backup)."""
        packs = []
        for pack_id, blobs in self.packs.items():
            entries = []
            for blob in blobs:
                text = (
                    f'{{"id":{_json_id(blob.id)},"type":"{blob.type.value}",'
                    f'"offset":{int(blob.offset)},"length":{int(blob.length)}'
                )
                if blob.uncompressed_length is not None:
                    text += f',"uncompressed_length":{int(blob.uncompressed_length)}'
                entries.append(text + "}")
            packs.append(f'{{"id":{_json_id(pack_id)},"blobs":[{",".join(entries)}]}}')
        head = '{"packs":['
        if self.supersedes:
            head = '{"supersedes":' + encode_json(self.supersedes).decode() + ',"packs":['
        return (head + ",".join(packs) + "]}").encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> IndexFile:
        columns = decode_columns(raw)
        return cls(packs=columns.packs, supersedes=columns.supersedes)


def _json_id(text: str) -> str:
    """An id as a JSON string: hex (every id this code makes) needs no escaping."""
    if text.isascii() and text.isalnum():
        return f'"{text}"'
    return encode_json(text).decode("utf-8")


def split_into_index_files(
    packs: Mapping[str, list[PackedBlob]],
) -> Iterator[IndexFile]:
    """Group packs into index files of at most MAX_BLOBS_PER_INDEX_FILE blobs (restic's limit);
    lazily, so a view of a big index is materialised one file at a time."""
    current = IndexFile()
    count = 0
    for pack_id in packs:
        blobs = packs[pack_id]
        if count and count + len(blobs) > MAX_BLOBS_PER_INDEX_FILE:
            yield current
            current, count = IndexFile(), 0
        current.packs[pack_id] = blobs
        count += len(blobs)
    if current.packs:
        yield current


@dataclass(frozen=True)
class _Search:
    """The lookup structures for records [0, sorted_count) plus a dict for the rest.

    Replaced whole on every re-sort, so a reader that took one sees a consistent view: the
    dicts only ever grow, and records move out of them only into a new _Search."""

    prefixes: array[int]  # 30-bit search keys (_prefix), ascending
    order: array[int]  # order[j]: the record whose prefix is prefixes[j] (stable)
    sorted_count: int
    tail: dict[bytes, int] = field(default_factory=dict)  # id -> first record after the sort
    tail_more: dict[bytes, list[int]] = field(default_factory=dict)  # its other records
    tail_end: list[int] = field(default_factory=lambda: [0])  # records indexed so far


_TOP_BYTE = 3 if sys.byteorder == "little" else 0  # where a word's top bits are
_LOW_SIX_BITS = bytes(value & 0x3F for value in range(256))


def _raw_id(blob_id: str) -> bytes | None:
    """The 32 bytes of a hex blob id, or None when it is not one."""
    try:
        raw = bytes.fromhex(blob_id)
    except ValueError:
        return None
    return raw if len(raw) == ID_SIZE else None


def _prefix(raw: bytes) -> int:
    """The search key of an id: its first 4 bytes as a native word, top two bits cleared."""
    return int.from_bytes(raw[:4], sys.byteorder) & 0x3FFFFFFF


_HIGH_WORD = 1 - _LOW_WORD


def _merge_runs(runs: list[tuple[int, array[int]]], count: int) -> _Search:
    """The search arrays from presorted runs (see sorted_keys), run `j` holding records
    base_j + n: one bucket of the keys' top 6 bits at a time, the runs' slices of it shifted
    by their base (one C-level addition per record) and merged by one sort of the bucket
    (timsort merges the already sorted slices); then split into prefixes and record numbers.
    The Python ints exist for one bucket at a time (~1/64 of the records)."""
    order = array("I")
    prefixes = array("I")
    starts = [0] * len(runs)
    for bucket in range(1, 65):
        limit = bucket << 56  # keys are (30-bit prefix) << 32 | record: top 6 bits at 56
        parts = []
        for number, (base, keys) in enumerate(runs):
            start = starts[number]
            end = bisect_left(keys, limit, start)
            if end > start:
                parts.append(map(base.__add__, keys[start:end]))
                starts[number] = end
        if not parts:
            continue
        merged = array("Q", sorted(chain.from_iterable(parts)))
        with memoryview(merged) as view, view.cast("B").cast("I") as halves:
            order.frombytes(halves[_LOW_WORD::2].tobytes())
            prefixes.frombytes(halves[_HIGH_WORD::2].tobytes())
    if len(order) != count:
        raise AssertionError("the presorted runs do not cover the index")
    return _Search(prefixes, order, count, tail_end=[count])


@dataclass
class IndexArrays:
    """A whole master index as its columns and its sorted search arrays (what the local
    index cache stores): record `r` is `ids[32r:32r+32]`, `types[r]`, `pack_of[r]`, ...;
    pack `k` owns the next `pack_sizes[k]` records; `prefixes`/`order` cover every record."""

    pack_ids: list[str]
    pack_sizes: array[int]
    ids: bytearray
    types: bytearray
    pack_of: array[int]
    offsets: array[int]
    lengths: array[int]
    uncompressed: array[int]
    prefixes: array[int]
    order: array[int]

    def record_count(self) -> int:
        return len(self.types)


class MasterIndex:
    """All index files merged, in columns. Thread-safe: reads from any thread; writes (adding
    packs) and the re-sorts they cause happen under an internal lock."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._pack_ids: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._pack_first = array("I")  # first record of each pack (a pack's records are adjacent)
        self._pack_sizes = array("I")
        self._ids = bytearray()
        self._types = bytearray()
        self._pack_of = array("I")
        self._offsets = array("I")
        self._lengths = array("I")
        self._uncompressed = array("I")
        self._count = 0  # records visible to readers (every column holds at least this many)
        self._search = _Search(array("I"), array("I"), 0)
        self._unique: tuple[int, int] | None = None  # (record count, unique ids) when counted
        # Presorted runs (record base, sorted_keys as array "Q") covering records
        # [0, _runs_end) back to back, from decoded files; _runs_end -1 once they cannot
        # cover every record (a file without keys, a pack skipped). Used by the first sort.
        self._runs: list[tuple[int, array[int]]] = []
        self._runs_end = 0

    @classmethod
    def from_arrays(cls, arrays: IndexArrays) -> MasterIndex:
        """An index holding `arrays` (taken over, not copied), already sorted: no per-blob
        work. Raises ValueError if the arrays do not fit together."""
        count = arrays.record_count()
        columns = (arrays.pack_of, arrays.offsets, arrays.lengths, arrays.uncompressed)
        if (
            len(arrays.ids) != count * ID_SIZE
            or any(len(column) != count for column in columns)
            or len(arrays.prefixes) != count
            or len(arrays.order) != count
            or len(arrays.pack_sizes) != len(arrays.pack_ids)
            or sum(arrays.pack_sizes) != count
            or len(set(arrays.pack_ids)) != len(arrays.pack_ids)
        ):
            raise ValueError("the index arrays do not fit together")
        index = cls()
        index._pack_ids = list(arrays.pack_ids)
        index._pack_numbers = {pack_id: number for number, pack_id in enumerate(index._pack_ids)}
        index._pack_sizes = arrays.pack_sizes
        if arrays.pack_ids:
            index._pack_first = array("I", accumulate(arrays.pack_sizes[:-1], initial=0))
        index._ids = arrays.ids
        index._types = arrays.types
        index._pack_of = arrays.pack_of
        index._offsets = arrays.offsets
        index._lengths = arrays.lengths
        index._uncompressed = arrays.uncompressed
        index._search = _Search(arrays.prefixes, arrays.order, count, tail_end=[count])
        index._count = count
        return index

    def arrays(self) -> IndexArrays:
        """Every record and the search arrays over all of them (sorting now if records were
        added since the last sort). The arrays are the index's own, not copies: hold no
        buffer of them while packs may be added."""
        with self._mutex:
            count = self._count
            if self._search.sorted_count != count:
                self._search = self._sort(count)
            search = self._search
            return IndexArrays(
                pack_ids=self._pack_ids,
                pack_sizes=self._pack_sizes,
                ids=self._ids,
                types=self._types,
                pack_of=self._pack_of,
                offsets=self._offsets,
                lengths=self._lengths,
                uncompressed=self._uncompressed,
                prefixes=search.prefixes,
                order=search.order,
            )

    # ----- adding ---------------------------------------------------------------------------

    def add_pack(self, pack_id: str, blobs: Iterable[PackedBlob]) -> None:
        """Add one pack (ignored if the pack is already indexed)."""
        if pack_id in self._pack_numbers:
            return
        blob_list = list(blobs)
        columns = IndexColumns(
            pack_ids=[pack_id],
            pack_sizes=array("I", [len(blob_list)]),
            ids=binascii.unhexlify("".join(blob.id for blob in blob_list)),
            types=bytes(_TYPE_CODES[blob.type] for blob in blob_list),
            offsets=_uint_array([blob.offset for blob in blob_list]),
            lengths=_uint_array([blob.length for blob in blob_list]),
            uncompressed=_uint_array([blob.uncompressed_length or 0 for blob in blob_list]),
        )
        self.add_columns(columns)

    def add_file(self, index_file: IndexFile | IndexColumns) -> None:
        if isinstance(index_file, IndexFile):
            for pack_id, blobs in index_file.packs.items():
                self.add_pack(pack_id, blobs)
        else:
            self.add_columns(index_file)

    def add_columns(self, columns: IndexColumns) -> None:
        """Add every pack of a decoded index file that is not indexed yet (a pack listed in
        two files, or twice in one, keeps its first listing)."""
        with self._mutex:
            seen: set[str] = set()
            fresh = []
            for pack_id in columns.pack_ids:
                fresh.append(pack_id not in self._pack_numbers and pack_id not in seen)
                seen.add(pack_id)
            if all(fresh):
                self._note_run(columns)
                self._append(columns, 0, len(columns.pack_ids), 0)
            else:
                self._drop_runs()
                start = 0
                for number, size in enumerate(columns.pack_sizes):
                    if fresh[number]:
                        self._append(columns, number, number + 1, start)
                    start += size

    def _note_run(self, columns: IndexColumns) -> None:
        """Keep the file's sorted keys as a run, if the runs so far cover every record."""
        count = columns.blob_count()
        if not count:
            return
        if self._runs_end != self._count or len(columns.sorted_keys) != 8 * count:
            self._drop_runs()
            return
        keys = array("Q")
        keys.frombytes(columns.sorted_keys)
        self._runs.append((self._count, keys))
        self._runs_end = self._count + count

    def _drop_runs(self) -> None:
        self._runs = []
        self._runs_end = -1

    def _append(self, columns: IndexColumns, first_pack: int, end_pack: int, start: int) -> None:
        """Append packs [first_pack, end_pack) of `columns`, whose blobs begin at `start`."""
        sizes = columns.pack_sizes[first_pack:end_pack]
        end = start + sum(sizes)
        record = self._count
        for number, (pack_id, size) in enumerate(
            zip(columns.pack_ids[first_pack:end_pack], sizes, strict=True), len(self._pack_ids)
        ):
            self._pack_numbers[pack_id] = number
            self._pack_ids.append(pack_id)
            self._pack_first.append(record)
            self._pack_sizes.append(size)
            self._pack_of.extend(array("I", [number]) * size)
            record += size
        self._ids += columns.ids[start * ID_SIZE : end * ID_SIZE]
        self._types += columns.types[start:end]
        self._offsets = _extend(self._offsets, columns.offsets[start:end])
        self._lengths = _extend(self._lengths, columns.lengths[start:end])
        self._uncompressed = _extend(self._uncompressed, columns.uncompressed[start:end])
        self._count = record  # published last: readers never see a half-written record

    # ----- searching ------------------------------------------------------------------------

    def _current(self) -> _Search:
        """The search structures, brought up to date with every record added so far."""
        search = self._search
        if search.tail_end[0] == self._count:
            return search
        with self._mutex:
            search = self._search
            count = self._count
            if count - search.sorted_count > max(_MIN_TAIL, search.sorted_count // _TAIL_SHARE):
                search = self._sort(count)
                self._search = search
            else:
                ids = self._ids
                for record in range(search.tail_end[0], count):
                    raw = bytes(ids[record * ID_SIZE : (record + 1) * ID_SIZE])
                    if raw in search.tail:
                        search.tail_more.setdefault(raw, []).append(record)
                    else:
                        search.tail[raw] = record
                search.tail_end[0] = count
            return search

    def _sort(self, count: int) -> _Search:
        """Sort records [0, count) by search key (stable: equal keys stay in record order):
        by merging the decoded files' presorted runs when they cover exactly these records
        (the first sort after a load on the decoder's workers), else from the ids."""
        runs, covered = self._runs, self._runs_end
        self._drop_runs()  # used once: later sorts include records added since
        if covered == count and runs:
            return _merge_runs(runs, count)
        return self._sort_ids(count)

    def _sort_ids(self, count: int) -> _Search:
        """Sort records [0, count) by search key (stable: equal keys stay in record order).

        First a bucket pass on the key's top 6 bits (64 buckets of record numbers, kept in
        arrays), then each bucket sorted on its own: the sort's temporary Python ints exist
        for one bucket at a time (~15 MB at a million blobs instead of ~85 MB), and it is
        faster than one big sort."""
        with memoryview(self._ids) as view, view[: count * ID_SIZE].cast("I") as words:
            raw_keys = bytearray(words[:: ID_SIZE // 4].tobytes())  # each id's first 4 bytes
        # Clear the top two bits of each (native-order) word with one strided translate, so
        # every key is a 30-bit int: the sort's fast path, without a Python-level shift.
        top = raw_keys[_TOP_BYTE::4].translate(_LOW_SIX_BITS)
        raw_keys[_TOP_BYTE::4] = top
        keys = array("I")
        keys.frombytes(raw_keys)
        del raw_keys
        buckets = [array("I") for _ in range(64)]  # by the key's top 6 bits: key >> 24
        appends = [bucket.append for bucket in buckets]
        for record, bucket_number in enumerate(top):
            appends[bucket_number](record)
        del top, appends
        key_of = keys.__getitem__
        order = array("I")
        prefixes = array("I")
        for bucket in buckets:
            ranked = sorted(bucket, key=key_of)
            order.fromlist(ranked)
            prefixes.extend(map(key_of, ranked))
        return _Search(prefixes, order, count, tail_end=[count])

    def _records(self, blob_id: str) -> list[int]:
        """Every record of `blob_id`, oldest first."""
        raw = _raw_id(blob_id)
        return [] if raw is None else self._raw_records(raw, self._current())

    def _sorted_records(self, raw: bytes, search: _Search) -> Iterator[int]:
        """The records of id `raw` among the sorted ones of `search`, in order."""
        prefixes, order, ids = search.prefixes, search.order, self._ids
        key = _prefix(raw)
        position = bisect_left(prefixes, key)
        while position < search.sorted_count and prefixes[position] == key:
            record = order[position]
            if ids[record * ID_SIZE : (record + 1) * ID_SIZE] == raw:
                yield record
            position += 1

    def _raw_records(self, raw: bytes, search: _Search) -> list[int]:
        found = list(self._sorted_records(raw, search))
        first = search.tail.get(raw)
        if first is not None:
            found.append(first)
            found.extend(search.tail_more.get(raw, ()))
        return found

    def _location(self, record: int, blob_id: str) -> BlobLocation:
        return BlobLocation(
            self._pack_ids[self._pack_of[record]],
            PackedBlob(
                blob_id,
                _CODE_TYPES[self._types[record]],
                self._offsets[record],
                self._lengths[record],
                self._uncompressed[record] or None,
            ),
        )

    def lookup(self, blob_id: str) -> BlobLocation | None:
        records = self._records(blob_id)
        return self._location(records[0], blob_id.lower()) if records else None

    def all_locations(self, blob_id: str) -> list[BlobLocation]:
        """Every location of `blob_id`, the first one added first."""
        return [self._location(record, blob_id.lower()) for record in self._records(blob_id)]

    def has(self, blob_id: str) -> bool:
        """Whether any record holds `blob_id`. A re-backup asks this for every blob of every
        unchanged file, so it stops at the first match and builds no list."""
        raw = _raw_id(blob_id)
        if raw is None:
            return False
        search = self._current()
        return raw in search.tail or next(self._sorted_records(raw, search), None) is not None

    # ----- whole-index views ----------------------------------------------------------------

    def _later_copies(self) -> set[int]:
        """Records whose id has an earlier record too (the duplicates), found from the runs of
        equal prefixes in the sorted order."""
        search = self._current()
        prefixes, order, ids = search.prefixes, search.order, self._ids
        later: set[int] = set()
        run_start = 0
        for position in range(1, search.sorted_count + 1):
            if position < search.sorted_count and prefixes[position] == prefixes[run_start]:
                continue
            if position - run_start > 1:
                seen: set[bytes] = set()
                for record in order[run_start:position]:  # ascending: the first copy first
                    raw = bytes(ids[record * ID_SIZE : (record + 1) * ID_SIZE])
                    if raw in seen:
                        later.add(record)
                    seen.add(raw)
            run_start = position
        for raw in search.tail:  # sorted records come first: those are the first copies
            later.update(self._raw_records(raw, search)[1:])
        return later

    def __len__(self) -> int:
        """The number of distinct blob ids."""
        count = self._count
        if self._unique is None or self._unique[0] != count:
            self._unique = (count, count - len(self._later_copies()))
        return self._unique[1]

    def blob_ids(self) -> Iterator[str]:
        """Every distinct blob id once, in the order they were first added."""
        later = self._later_copies()
        count = self._count
        for record in range(count):
            if record not in later:
                yield self._ids[record * ID_SIZE : (record + 1) * ID_SIZE].hex()

    @property
    def packs(self) -> PackView:
        """pack id -> its blobs (PackedBlob lists built on access), in the order added."""
        return PackView(self)

    def pack_count(self) -> int:
        return len(self._pack_ids)

    def record_count(self) -> int:
        """Blob locations held (duplicates counted)."""
        return self._count

    def memory_bytes(self) -> int:
        """Bytes held by the per-blob columns and search arrays (not the per-pack table)."""
        search = self._search
        columns = (self._pack_of, self._offsets, self._lengths, self._uncompressed)
        return (
            len(self._ids)
            + len(self._types)
            + sum(len(column) * column.itemsize for column in columns)
            + (len(search.prefixes) + len(search.order)) * 4
        )

    def _pack_blobs(self, number: int) -> list[PackedBlob]:
        first = self._pack_first[number]
        return _blobs(self, first, first + self._pack_sizes[number])


class PackView(Mapping[str, list[PackedBlob]]):
    """A read-only mapping over the master index's packs; each value is built on access."""

    def __init__(self, index: MasterIndex) -> None:
        self._index = index

    def __getitem__(self, pack_id: str) -> list[PackedBlob]:
        return self._index._pack_blobs(self._index._pack_numbers[pack_id])

    def __contains__(self, pack_id: object) -> bool:
        return pack_id in self._index._pack_numbers

    def __iter__(self) -> Iterator[str]:
        return iter(self._index._pack_ids[:])

    def __len__(self) -> int:
        return len(self._index._pack_ids)
