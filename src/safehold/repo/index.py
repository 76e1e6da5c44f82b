"""Index files: which pack holds which blob, at what offset, so no pack header must be read.

    {"supersedes": [index ids], "packs": [{"id": pack, "blobs": [{"id", "type", "offset",
     "length", "uncompressed_length"?}]}]}

The index is derived data: every entry can be rebuilt from pack headers (`check`/`repair`).
In memory, the master index maps blob id -> (pack id, entry); a blob stored twice (two
concurrent backups) keeps every location so prune can drop the extra copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from safehold.repo.format import encode_json
from safehold.repo.pack import BlobType, PackedBlob

MAX_BLOBS_PER_INDEX_FILE = 50_000


@dataclass(frozen=True)
class BlobLocation:
    pack_id: str
    blob: PackedBlob


@dataclass
class IndexFile:
    packs: dict[str, list[PackedBlob]] = field(default_factory=dict)
    supersedes: list[str] = field(default_factory=list)

    def blob_count(self) -> int:
        return sum(len(blobs) for blobs in self.packs.values())

    def encode(self) -> bytes:
        packs = []
        for pack_id, blobs in self.packs.items():
            entries = []
            for blob in blobs:
                entry: dict[str, object] = {
                    "id": blob.id,
                    "type": blob.type.value,
                    "offset": blob.offset,
                    "length": blob.length,
                }
                if blob.uncompressed_length is not None:
                    entry["uncompressed_length"] = blob.uncompressed_length
                entries.append(entry)
            packs.append({"id": pack_id, "blobs": entries})
        value: dict[str, object] = {"packs": packs}
        if self.supersedes:
            value = {"supersedes": self.supersedes, "packs": packs}
        return encode_json(value)

    @classmethod
    def decode(cls, raw: bytes) -> IndexFile:
        value = json.loads(raw)
        if isinstance(value, list):  # restic's legacy index format: a bare list of packs
            value = {"packs": value}
        result = cls(supersedes=list(value.get("supersedes") or []))
        for pack in value.get("packs") or []:
            blobs = [
                PackedBlob(
                    id=str(blob["id"]),
                    type=BlobType(blob["type"]),
                    offset=int(blob["offset"]),
                    length=int(blob["length"]),
                    uncompressed_length=(
                        int(blob["uncompressed_length"])
                        if blob.get("uncompressed_length")
                        else None
                    ),
                )
                for blob in pack.get("blobs") or []
            ]
            result.packs.setdefault(str(pack["id"]), []).extend(blobs)
        return result


def split_into_index_files(packs: dict[str, list[PackedBlob]]) -> Iterator[IndexFile]:
    """Group packs into index files of at most MAX_BLOBS_PER_INDEX_FILE blobs (restic's limit)."""
    current = IndexFile()
    count = 0
    for pack_id, blobs in packs.items():
        if count and count + len(blobs) > MAX_BLOBS_PER_INDEX_FILE:
            yield current
            current, count = IndexFile(), 0
        current.packs[pack_id] = blobs
        count += len(blobs)
    if current.packs:
        yield current


class MasterIndex:
    """All index files merged. Thread-safe for reads; writers add under the repository lock."""

    def __init__(self) -> None:
        self._blobs: dict[str, BlobLocation] = {}
        self._duplicates: dict[str, list[BlobLocation]] = {}
        self._packs: dict[str, list[PackedBlob]] = {}

    def add_pack(self, pack_id: str, blobs: Iterable[PackedBlob]) -> None:
        blob_list = list(blobs)
        if pack_id in self._packs:
            return
        self._packs[pack_id] = blob_list
        for blob in blob_list:
            location = BlobLocation(pack_id, blob)
            if blob.id in self._blobs:
                self._duplicates.setdefault(blob.id, []).append(location)
            else:
                self._blobs[blob.id] = location

    def add_file(self, index_file: IndexFile) -> None:
        for pack_id, blobs in index_file.packs.items():
            self.add_pack(pack_id, blobs)

    def lookup(self, blob_id: str) -> BlobLocation | None:
        return self._blobs.get(blob_id)

    def all_locations(self, blob_id: str) -> list[BlobLocation]:
        first = self._blobs.get(blob_id)
        if first is None:
            return []
        return [first, *self._duplicates.get(blob_id, [])]

    def has(self, blob_id: str) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def packs(self) -> dict[str, list[PackedBlob]]:
        return self._packs

    def blob_ids(self) -> Iterator[str]:
        return iter(self._blobs)
