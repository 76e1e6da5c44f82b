"""Whole-pack reads for remote storage: same bytes as ranged reads, one fetch per pack."""

from __future__ import annotations

import os
import threading
from collections import Counter

from safehold.backends.memory import MemoryBackend
from safehold.repo.packcache import PackCache


class _CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gets: Counter[str] = Counter()

    def get(self, name: str) -> bytes:
        self.gets[name] += 1
        return super().get(name)


def test_reads_equal_ranged_reads_and_each_pack_is_fetched_once() -> None:
    backend = _CountingBackend()
    packs = {f"data/0{i}/pack{i}": os.urandom(100_000) for i in range(3)}
    for name, data in packs.items():
        backend.put(name, data)
    cache = PackCache(backend, limit_bytes=1_000_000)
    for name, data in packs.items():
        for offset in (0, 1, 4096, 99_990):
            assert cache.read(name, offset, 64) == data[offset : offset + 64]
    assert all(count == 1 for count in backend.gets.values())


def test_concurrent_readers_share_one_download() -> None:
    backend = _CountingBackend()
    backend.put("data/aa/pack", os.urandom(1 << 20))
    cache = PackCache(backend)
    barrier = threading.Barrier(8)
    results: list[bytes] = []

    def reader(offset: int) -> None:
        barrier.wait()
        results.append(cache.read("data/aa/pack", offset, 1000))

    threads = [threading.Thread(target=reader, args=(n * 1000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.gets["data/aa/pack"] == 1 and len(results) == 8


def test_memory_stays_within_the_limit() -> None:
    backend = _CountingBackend()
    for number in range(10):
        backend.put(f"p{number}", bytes(300_000))
    cache = PackCache(backend, limit_bytes=1_000_000)
    for number in range(10):
        cache.read(f"p{number}", 0, 10)
    assert cache._size <= 1_000_000
    cache.read("p0", 0, 10)  # evicted long ago: fetched again
    assert backend.gets["p0"] == 2
