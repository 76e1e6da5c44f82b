"""Content-defined chunking: FastCDC (pyfastcdc's C core) with a keyed gear table.

restic cuts with a Rabin fingerprint; safehold cuts with FastCDC, which is an order of
magnitude faster in Python and deduplicates as well. Boundaries differ from restic's, which
the format allows (a blob is whatever bytes hash to its id). The gear table is seeded from the
repository's secret chunker polynomial, so boundaries do not reveal content.

Sizes: at least 512 KiB, about 1 MiB on average, at most 8 MiB (restic's bounds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pyfastcdc.cy import FastCDC

CHUNK_MIN = 512 * 1024
CHUNK_AVG = 1024 * 1024
CHUNK_MAX = 8 * 1024 * 1024
_BUFFER_SIZE = CHUNK_MAX + 2 * 1024 * 1024

ReadInto = Callable[[memoryview], int]


class Chunker:
    """Splits streams into chunks; reuses one buffer, so use one instance per thread."""

    def __init__(self, seed: int, buffer_size: int = _BUFFER_SIZE) -> None:
        if buffer_size <= CHUNK_MAX:
            raise ValueError("the buffer must hold more than one maximal chunk")
        # pyfastcdc's average excludes the minimum (a cut is searched after min_size)
        self._cdc = FastCDC(
            CHUNK_AVG - CHUNK_MIN, min_size=CHUNK_MIN, max_size=CHUNK_MAX, seed=seed
        )
        self._buffer = bytearray(buffer_size)

    def chunks(self, readinto: ReadInto) -> Iterator[memoryview]:
        """Yield chunks of the stream as views into the buffer, valid until the next one.

        A cut found before the buffer's end does not depend on bytes after it, so only the
        last, open chunk is carried over and cut again once more data is in.
        """
        view = memoryview(self._buffer)
        start = end = 0
        eof = False
        while True:
            if start:
                view[: end - start] = view[start:end]
                end -= start
                start = 0
            while not eof and end < len(view):
                count = readinto(view[end:])
                if not count:
                    eof = True
                end += count
            if end == 0:
                return
            tail: int | None = None
            for chunk in self._cdc.cut_buf(view[:end]):
                chunk_end = chunk.offset + chunk.length
                if chunk_end == end and not eof:
                    tail = chunk.offset
                    break
                yield view[chunk.offset : chunk_end]
            if tail is None:
                return
            start = tail
