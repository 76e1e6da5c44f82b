"""The streaming chunker must cut exactly where FastCDC cuts the whole buffer at once."""

from __future__ import annotations

import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc.cy import FastCDC

from safehold.repo.chunker import CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, Chunker


class _ShortReads(io.RawIOBase):
    """A stream that hands out at most `step` bytes per read, like a pipe or a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._step, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


def _reference(data: bytes, seed: int) -> list[bytes]:
    cdc = FastCDC(CHUNK_AVG - CHUNK_MIN, min_size=CHUNK_MIN, max_size=CHUNK_MAX, seed=seed)
    return [bytes(chunk.data) for chunk in cdc.cut_buf(data)]


def _sample(seed: int, size: int, zeros: float) -> bytes:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    if zeros:  # long runs without any cut point force maximal chunks
        start = int(size * (1 - zeros) / 2)
        data[start : start + int(size * zeros)] = bytes(int(size * zeros))
    return bytes(data)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(1, 2**63 - 1),
    size=st.sampled_from([0, 1, CHUNK_MIN - 1, CHUNK_MIN + 1, 3 * CHUNK_MAX + 12345, 25 << 20]),
    zeros=st.sampled_from([0.0, 0.5, 1.0]),
    step=st.sampled_from([1 << 16, 1 << 20, 1 << 30]),
)
def test_streaming_matches_whole_buffer_cuts(seed: int, size: int, zeros: float, step: int) -> None:
    data = _sample(seed, size, zeros)
    chunker = Chunker(seed)
    got = [bytes(chunk) for chunk in chunker.chunks(_ShortReads(data, step).readinto)]
    assert b"".join(got) == data
    assert got == _reference(data, seed)
    for chunk in got[:-1]:
        assert CHUNK_MIN <= len(chunk) <= CHUNK_MAX


def test_the_same_chunker_is_reusable_across_streams() -> None:
    chunker = Chunker(7)
    first, second = _sample(1, 20 << 20, 0.0), _sample(2, 9 << 20, 0.3)
    for data in (first, second, first):
        assert [bytes(c) for c in chunker.chunks(io.BytesIO(data).readinto)] == _reference(data, 7)


def test_boundaries_depend_on_the_repository_secret() -> None:
    data = _sample(3, 30 << 20, 0.0)
    cuts_a = [len(c) for c in Chunker(11).chunks(io.BytesIO(data).readinto)]
    cuts_b = [len(c) for c in Chunker(12).chunks(io.BytesIO(data).readinto)]
    assert cuts_a != cuts_b


def test_an_insertion_changes_only_nearby_chunks() -> None:
    data = _sample(4, 40 << 20, 0.0)
    edited = data[: 20 << 20] + b"inserted" * 128 + data[20 << 20 :]
    before = {bytes(c) for c in Chunker(5).chunks(io.BytesIO(data).readinto)}
    after = [bytes(c) for c in Chunker(5).chunks(io.BytesIO(edited).readinto)]
    new = [c for c in after if c not in before]
    assert sum(len(c) for c in new) <= 2 * CHUNK_MAX
