"""Process-wide tuning that keeps memory bounded in a long-running threaded pipeline."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> None:
    """Cap glibc's per-thread arenas and pin its mmap threshold.

    Blobs and packs are 0.5-8 MiB buffers allocated and freed by several threads. With one
    arena per thread, freed buffers sit in arenas other threads never reuse and resident
    memory creeps far above what is live; two arenas keep reuse high. The threshold is pinned
    at 32 MiB (glibc's own ceiling) so that every blob-sized buffer is recycled from the heap:
    a lower threshold returns memory sooner but pays a page fault per 4 KiB of every fresh
    buffer, which measured 30% slower (docs/benchmarks.md). No-op without glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    mallopt(_M_ARENA_MAX, 2)
