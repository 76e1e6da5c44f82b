"""Pack files: blobs, encrypted header, little-endian uint32 header length."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repo.crypto import AuthenticationError, MasterKey
from safehold.repo.pack import (
    BlobType,
    PackBuilder,
    PackedBlob,
    PackFormatError,
    decode_blob,
    decode_header,
    encode_blob,
    encode_header,
    read_header,
)

MASTER = MasterKey.generate()

incompressible = st.binary(max_size=600)
compressible = st.tuples(st.binary(min_size=1, max_size=16), st.integers(10, 200)).map(
    lambda pair: pair[0] * pair[1]
)
blob_specs = st.lists(
    st.tuples(
        st.sampled_from([BlobType.DATA, BlobType.TREE]),
        st.one_of(incompressible, compressible),
        st.sampled_from([None, 3]),
    ),
    max_size=12,
)


def _build(specs: list[tuple[BlobType, bytes, int | None]]) -> tuple[bytes, list[PackedBlob]]:
    builder = PackBuilder()
    for blob_type, plaintext, level in specs:
        blob_id = hashlib.sha256(plaintext).hexdigest()
        builder.add(encode_blob(MASTER, blob_id, blob_type, plaintext, level))
    assert len(builder) == len(specs)
    return builder.finish(MASTER)


def _parse_header_independently(plain_header: bytes) -> list[tuple[int, int, int | None, bytes]]:
    """(type code, length, uncompressed length, raw id) straight from the byte layout."""
    entries = []
    position = 0
    while position < len(plain_header):
        code = plain_header[position]
        if code in (0, 1):
            (length,) = struct.unpack_from("<I", plain_header, position + 1)
            entries.append((code, length, None, plain_header[position + 5 : position + 37]))
            position += 37
        else:
            assert code in (2, 3)
            length, raw_len = struct.unpack_from("<II", plain_header, position + 1)
            entries.append((code, length, raw_len, plain_header[position + 9 : position + 41]))
            position += 41
    assert position == len(plain_header)
    return entries


@settings(max_examples=60, deadline=None)
@given(blob_specs)
def test_pack_round_trip(specs: list[tuple[BlobType, bytes, int | None]]) -> None:
    pack, entries = _build(specs)
    assert read_header(MASTER, pack) == entries
    assert len(entries) == len(specs)
    offset = 0
    for entry, (blob_type, plaintext, level) in zip(entries, specs, strict=True):
        assert entry.id == hashlib.sha256(plaintext).hexdigest()
        assert entry.type is blob_type
        assert entry.offset == offset
        offset += entry.length
        if entry.uncompressed_length is not None:
            assert level is not None
            assert entry.uncompressed_length == len(plaintext)
            assert entry.length < len(plaintext) + 32  # it was only compressed because it shrank
        assert entry.plaintext_length == len(plaintext)
        stored = pack[entry.offset : entry.offset + entry.length]
        assert decode_blob(MASTER, entry, stored) == plaintext


@settings(max_examples=60, deadline=None)
@given(blob_specs)
def test_pack_byte_layout(specs: list[tuple[BlobType, bytes, int | None]]) -> None:
    pack, entries = _build(specs)
    (header_length,) = struct.unpack("<I", pack[-4:])
    blobs_end = len(pack) - 4 - header_length
    assert blobs_end == sum(entry.length for entry in entries)
    plain_header = MASTER.decrypt_object(pack[blobs_end:-4])
    compressed = sum(1 for entry in entries if entry.uncompressed_length is not None)
    assert len(plain_header) == 37 * (len(entries) - compressed) + 41 * compressed
    assert header_length == len(plain_header) + 32
    parsed = _parse_header_independently(plain_header)
    for (code, length, raw_len, raw_id), entry in zip(parsed, entries, strict=True):
        expected_code = {BlobType.DATA: 0, BlobType.TREE: 1}[entry.type]
        if entry.uncompressed_length is not None:
            expected_code += 2
        assert code == expected_code
        assert length == entry.length
        assert raw_len == entry.uncompressed_length
        assert raw_id == bytes.fromhex(entry.id)


def test_compressible_blob_is_compressed_only_with_a_level() -> None:
    plaintext = b"abc" * 1000
    blob_id = hashlib.sha256(plaintext).hexdigest()
    compressed = encode_blob(MASTER, blob_id, BlobType.DATA, plaintext, 3)
    assert compressed.uncompressed_length == len(plaintext)
    assert len(compressed.data) < 200
    plain = encode_blob(MASTER, blob_id, BlobType.DATA, plaintext, None)
    assert plain.uncompressed_length is None
    assert len(plain.data) == len(plaintext) + 32
    empty = encode_blob(MASTER, hashlib.sha256(b"").hexdigest(), BlobType.DATA, b"", 3)
    assert empty.uncompressed_length is None


def test_header_entry_sizes() -> None:
    blob_id = "ab" * 32
    plain = encode_header([PackedBlob(blob_id, BlobType.TREE, 0, 100, None)])
    assert plain == b"\x01" + struct.pack("<I", 100) + bytes.fromhex(blob_id)
    assert len(plain) == 37
    packed = encode_header([PackedBlob(blob_id, BlobType.DATA, 0, 100, 500)])
    assert packed == b"\x02" + struct.pack("<II", 100, 500) + bytes.fromhex(blob_id)
    assert len(packed) == 41
    assert decode_header(plain + packed) == [
        PackedBlob(blob_id, BlobType.TREE, 0, 100, None),
        PackedBlob(blob_id, BlobType.DATA, 100, 100, 500),
    ]


def test_empty_pack_has_an_empty_header() -> None:
    pack, entries = PackBuilder().finish(MASTER)
    assert entries == []
    assert len(pack) == 32 + 4
    assert read_header(MASTER, pack) == []


def _sample_pack() -> tuple[bytes, list[PackedBlob]]:
    return _build(
        [
            (BlobType.DATA, b"first blob" * 50, 3),
            (BlobType.DATA, bytes(range(256)), None),
            (BlobType.TREE, b'{"nodes":[]}\n', None),
        ]
    )


def test_corrupt_header_byte_is_detected() -> None:
    pack, _ = _sample_pack()
    (header_length,) = struct.unpack("<I", pack[-4:])
    header_start = len(pack) - 4 - header_length
    for position in (header_start, header_start + 20, len(pack) - 5):
        corrupt = bytearray(pack)
        corrupt[position] ^= 0x01
        with pytest.raises(AuthenticationError):
            read_header(MASTER, bytes(corrupt))


def test_corrupt_blob_is_detected_by_decode_blob() -> None:
    pack, entries = _sample_pack()
    entry = entries[1]
    stored = bytearray(pack[entry.offset : entry.offset + entry.length])
    stored[40] ^= 0xFF
    with pytest.raises(AuthenticationError):
        decode_blob(MASTER, entry, bytes(stored))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda pack: b"", id="empty"),
        pytest.param(lambda pack: pack[-3:], id="shorter-than-trailer"),
        pytest.param(lambda pack: pack[-40:], id="shorter-than-header"),
        pytest.param(lambda pack: pack[1:], id="first-byte-missing"),
        pytest.param(lambda pack: pack[100:], id="blob-data-missing"),
    ],
)
def test_truncated_pack_is_a_format_error(cut: object) -> None:
    pack, _ = _sample_pack()
    with pytest.raises(PackFormatError):
        read_header(MASTER, cut(pack))  # type: ignore[operator]


@pytest.mark.parametrize("length", [0, 31, 16 * 1024 * 1024 + 1, 0xFFFFFFFF])
def test_implausible_header_length(length: int) -> None:
    pack, _ = _sample_pack()
    with pytest.raises(PackFormatError):
        read_header(MASTER, pack[:-4] + struct.pack("<I", length))


def test_unknown_blob_type_and_truncated_entries() -> None:
    with pytest.raises(PackFormatError):
        decode_header(b"\x04" + bytes(36))
    with pytest.raises(PackFormatError):
        decode_header(b"\x00" + bytes(30))
    with pytest.raises(PackFormatError):
        decode_header(b"\x02" + bytes(37))
