"""Process-wide tuning that keeps memory bounded in a long-running threaded pipeline."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> None:
    """Make glibc return large buffers to the OS at once and cap per-thread arenas.

    Blobs and packs are 0.5-16 MiB buffers. glibc raises its mmap threshold dynamically after
    the first frees, after which such buffers come from the heap and fragment it, so resident
    memory creeps far above what is live. A fixed threshold keeps RSS close to the live set.
    No-op where glibc is not the allocator.
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
    mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
    mallopt(_M_ARENA_MAX, 2)
