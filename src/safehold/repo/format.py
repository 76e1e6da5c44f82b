"""Shared encodings of the format: object ids, unpacked-file framing, file type names."""

from __future__ import annotations

import hashlib
import json
import threading
from enum import Enum
from typing import Any

import zstandard

from safehold.errors import IntegrityError
from safehold.repo.crypto import AuthenticationError, MasterKey

ID_SIZE = 32
REPOSITORY_VERSION = 2
_COMPRESSED_JSON_MARKER = 2


class FileType(Enum):
    """The top-level folders of a repository (restic's file types) and their prefixes."""

    CONFIG = "config"
    KEY = "keys"
    LOCK = "locks"
    SNAPSHOT = "snapshots"
    INDEX = "index"
    PACK = "data"
    SAFEHOLD = "safehold"


def object_name(file_type: FileType, object_id: str) -> str:
    """Backend name of an object: packs are fanned out by the first two hex digits."""
    if file_type is FileType.CONFIG:
        return "config"
    if file_type is FileType.PACK:
        return f"data/{object_id[:2]}/{object_id}"
    return f"{file_type.value}/{object_id}"


def hash_id(data: bytes | memoryview) -> str:
    """The id of a stored file or blob: hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def is_valid_id(text: str) -> bool:
    return len(text) == 2 * ID_SIZE and all(c in "0123456789abcdef" for c in text)


_local = threading.local()


def zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    """A per-thread compressor (ZstdCompressor objects must not be shared across threads)."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = {}
        _local.compressors = cache
    compressor = cache.get(level)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        cache[level] = compressor
    return compressor


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = zstandard.ZstdDecompressor()
        _local.decompressor = decompressor
    return decompressor


def decompress(data: bytes, expected_size: int | None = None) -> bytes:
    if expected_size is not None:
        result: bytes = zstd_decompressor().decompress(data, max_output_size=expected_size)
        return result
    obj = zstd_decompressor().decompressobj()
    out: bytes = obj.decompress(data)
    return out


def encode_json(value: Any) -> bytes:
    """Compact JSON as restic writes it (no spaces, non-ASCII kept as UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def frame_unpacked(plaintext: bytes, version: int, compress: bool = True) -> bytes:
    """Version 2 prefixes compressed JSON with the byte 0x02; plain JSON starts with { or [."""
    if version < 2 or not compress:
        return plaintext
    return bytes([_COMPRESSED_JSON_MARKER]) + zstd_compressor(3).compress(plaintext)


def unframe_unpacked(plaintext: bytes) -> bytes:
    if not plaintext:
        raise ValueError("empty object")
    if plaintext[0] == _COMPRESSED_JSON_MARKER:
        return decompress(plaintext[1:])
    if plaintext[:1] in (b"{", b"["):
        return plaintext
    raise ValueError(f"unknown object framing byte 0x{plaintext[0]:02x}")


def open_unpacked(key: MasterKey, data: bytes, object_id: str, name: str) -> bytes:
    """The plaintext of the stored unpacked object `data` (`name`), whose content must hash
    to `object_id`: checked, decrypted and unframed. Any damage is an IntegrityError that
    names the object (a repository's reads, and the index decoder's worker processes)."""
    if hash_id(data) != object_id:
        raise IntegrityError(f"{name} is corrupt: its content does not match its name")
    try:
        return unframe_unpacked(key.decrypt_object(data))
    except AuthenticationError:
        raise IntegrityError(f"{name} is corrupt: authentication failed") from None
    except ValueError as err:
        raise IntegrityError(f"{name} is corrupt: {err}") from None
