"""Pack files: encrypted blobs back to back, then the encrypted header, then its length.

    blob_1 || ... || blob_n || encrypt(header) || uint32_le(len(encrypt(header)))

Each header entry is `type(1) || length(4) || [uncompressed_length(4)] || id(32)`, lengths
little-endian; `length` is the stored (encrypted) size. Types: 0 data, 1 tree, 2 compressed
data, 3 compressed tree. A blob's id is SHA-256 of its plaintext before compression, so the
same content always has the same id whatever the compression.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from safehold.repo.crypto import EXTENSION, MasterKey
from safehold.repo.format import decompress, zstd_compressor

_PLAIN_ENTRY = struct.Struct("<BI32s")
_COMPRESSED_ENTRY = struct.Struct("<BII32s")
_HEADER_LENGTH = struct.Struct("<I")
MAX_HEADER_SIZE = 16 * 1024 * 1024


class BlobType(Enum):
    DATA = "data"
    TREE = "tree"


_TYPE_CODES = {
    (BlobType.DATA, False): 0,
    (BlobType.TREE, False): 1,
    (BlobType.DATA, True): 2,
    (BlobType.TREE, True): 3,
}
_CODE_TYPES = {code: key for key, code in _TYPE_CODES.items()}


@dataclass(frozen=True)
class PackedBlob:
    """Where a blob sits in its pack. `uncompressed_length` is None for uncompressed blobs."""

    id: str
    type: BlobType
    offset: int
    length: int
    uncompressed_length: int | None

    @property
    def plaintext_length(self) -> int:
        if self.uncompressed_length is not None:
            return self.uncompressed_length
        return self.length - EXTENSION


class PackFormatError(ValueError):
    """The pack's trailer or header is malformed."""


@dataclass(frozen=True)
class EncodedBlob:
    id: str
    type: BlobType
    data: bytes
    uncompressed_length: int | None


def encode_blob(
    master: MasterKey,
    blob_id: str,
    blob_type: BlobType,
    plaintext: bytes | memoryview,
    compression_level: int | None,
) -> EncodedBlob:
    """Compress (when it saves space) and encrypt one blob."""
    if compression_level is not None and len(plaintext) > 0:
        compressed = zstd_compressor(compression_level).compress(plaintext)
        if len(compressed) < len(plaintext):
            return EncodedBlob(
                blob_id, blob_type, master.encrypt_object(compressed), len(plaintext)
            )
    return EncodedBlob(blob_id, blob_type, master.encrypt_object(plaintext), None)


def decode_blob(master: MasterKey, blob: PackedBlob, stored: bytes | memoryview) -> bytes:
    """Authenticate, decrypt and decompress one stored blob (does not check its id)."""
    plaintext = master.decrypt_object(stored)
    if blob.uncompressed_length is not None:
        return decompress(plaintext, blob.uncompressed_length)
    return plaintext


def encode_header(entries: list[PackedBlob]) -> bytes:
    parts = []
    for entry in entries:
        compressed = entry.uncompressed_length is not None
        code = _TYPE_CODES[(entry.type, compressed)]
        raw_id = bytes.fromhex(entry.id)
        if compressed:
            assert entry.uncompressed_length is not None
            parts.append(
                _COMPRESSED_ENTRY.pack(code, entry.length, entry.uncompressed_length, raw_id)
            )
        else:
            parts.append(_PLAIN_ENTRY.pack(code, entry.length, raw_id))
    return b"".join(parts)


def decode_header(header: bytes) -> list[PackedBlob]:
    """Parse a decrypted header; offsets follow from the lengths in order."""
    entries: list[PackedBlob] = []
    position = 0
    offset = 0
    while position < len(header):
        code = header[position]
        if code not in _CODE_TYPES:
            raise PackFormatError(f"unknown blob type {code} in pack header")
        blob_type, compressed = _CODE_TYPES[code]
        if compressed:
            if position + _COMPRESSED_ENTRY.size > len(header):
                raise PackFormatError("truncated pack header")
            _, length, raw_len, raw_id = _COMPRESSED_ENTRY.unpack_from(header, position)
            position += _COMPRESSED_ENTRY.size
            uncompressed: int | None = raw_len
        else:
            if position + _PLAIN_ENTRY.size > len(header):
                raise PackFormatError("truncated pack header")
            _, length, raw_id = _PLAIN_ENTRY.unpack_from(header, position)
            position += _PLAIN_ENTRY.size
            uncompressed = None
        entries.append(PackedBlob(raw_id.hex(), blob_type, offset, length, uncompressed))
        offset += length
    return entries


class PackBuilder:
    """Collects encoded blobs into one pack file; not thread-safe (the packer serialises)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._entries: list[PackedBlob] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, blob: EncodedBlob) -> None:
        self._entries.append(
            PackedBlob(blob.id, blob.type, self.size, len(blob.data), blob.uncompressed_length)
        )
        self._parts.append(blob.data)
        self.size += len(blob.data)

    def add_run(
        self, blob_type: BlobType, data: bytes, blobs: list[tuple[str, int, int | None]]
    ) -> None:
        """Blobs encoded back to back in `data`: (id, stored length, uncompressed length or
        None) each, their lengths adding up to len(data)."""
        if sum(blob[1] for blob in blobs) != len(data):
            raise ValueError("the blobs' lengths do not add up to the run's")
        offset = self.size
        entries = self._entries
        for blob_id, length, uncompressed in blobs:
            entries.append(PackedBlob(blob_id, blob_type, offset, length, uncompressed))
            offset += length
        self._parts.append(data)
        self.size = offset

    def finish_parts(self, master: MasterKey) -> tuple[list[bytes], list[PackedBlob]]:
        """The pack file as pieces to store back to back (no joined copy), and its entries."""
        header = master.encrypt_object(encode_header(self._entries))
        parts = [*self._parts, header, _HEADER_LENGTH.pack(len(header))]
        self._parts = []
        return parts, self._entries

    def finish(self, master: MasterKey) -> tuple[bytes, list[PackedBlob]]:
        """The complete pack file in one piece, and its entries."""
        parts, entries = self.finish_parts(master)
        return b"".join(parts), entries


def header_length_from_trailer(trailer: bytes) -> int:
    if len(trailer) < _HEADER_LENGTH.size:
        raise PackFormatError("pack is too short to hold a header length")
    (length,) = _HEADER_LENGTH.unpack(trailer[-_HEADER_LENGTH.size :])
    if length > MAX_HEADER_SIZE or length < EXTENSION:
        raise PackFormatError(f"implausible pack header length {length}")
    return int(length)


def read_header(master: MasterKey, pack_data: bytes) -> list[PackedBlob]:
    """Decrypt and parse the header of a complete pack file held in memory."""
    length = header_length_from_trailer(pack_data)
    if length + _HEADER_LENGTH.size > len(pack_data):
        raise PackFormatError("pack header length exceeds the pack size")
    end = len(pack_data) - _HEADER_LENGTH.size
    header = master.decrypt_object(pack_data[end - length : end])
    entries = decode_header(header)
    if entries and entries[-1].offset + entries[-1].length > end - length:
        raise PackFormatError("pack header describes more data than the pack holds")
    return entries
