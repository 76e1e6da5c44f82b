"""Process-wide tuning: memory bounded in a long-running threaded pipeline, and forked
workers that never outlive the process that forked them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

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


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Initializer of a forked worker (Linux). A forked worker holds a copy of every
    descriptor its parent had open, flock()ed lock files among them (the WAL pusher's spool
    lock, a job's lock, a repository's lock), and a pool worker waits forever on its queue
    once the parent is gone: a parent killed -9 would leave workers that keep those locks
    held for good. The kernel kills the worker when the thread that forked it ends (that
    thread must hold the pool for its whole life); a parent already gone before this ran is
    checked by its pid."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(1)
