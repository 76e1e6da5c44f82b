"""Process-wide tuning: memory bounded in a long-running threaded pipeline, and forked
workers that never outlive the process that forked them."""

from __future__ import annotations

import ctypes
import os
import signal
import threading

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def tune_allocator() -> None:
    """Cap glibc's per-thread arenas and pin its mmap threshold.

    Blobs and packs are 0.5-8 MiB buffers allocated and freed by several threads. With one
    arena per thread, freed buffers sit in arenas other threads never reuse and resident
    memory creeps far above what is live; two arenas keep reuse high. The threshold is pinned
    at 32 MiB (glibc's own ceiling) so that every blob-sized buffer is recycled from the heap:
    a lower threshold returns memory sooner but pays a page fault per 4 KiB of every fresh
    buffer, which measured 30% slower (docs/benchmarks.md). No-op without glibc.
    """
    try:  # the process's own symbols: find_library("c") would run `ldconfig -p` (20-40 ms)
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    mallopt(_M_ARENA_MAX, 2)


def keep_freed_heap(limit: int = 256 * 1024 * 1024) -> None:
    """Let glibc keep up to `limit` bytes of freed memory at the top of its heaps instead of
    handing it back to the kernel at every free (its default returns anything over 128 KiB).

    For a short-lived process that allocates and frees blob-sized buffers in a loop (a
    restore's pack workers): returned memory comes back as fresh pages, one page fault per
    4 KiB at the next allocation, and page faults are what a VM pays most for. Peak memory is
    unchanged (only freed memory is kept); the process's resident size stays at its peak until
    it exits. No-op without glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_TRIM_THRESHOLD, limit)


def kill_when_parent_dies() -> bool:
    """In a child process: ask the kernel for SIGKILL when the thread that created this
    process ends (Linux). A forked child holds copies of its parent's descriptors, flock()ed
    lock files among them, and a helper that outlives a parent killed -9 would keep those
    locks held, or keep a replication slot busy, for good. Returns False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int) -> None:
    """Initializer of a forked pool worker: a pool worker waits forever on its queue once
    the parent is gone, holding copies of its locks (the WAL pusher's spool lock, a job's
    lock). It is killed when the thread that forked it ends (that thread must hold the pool
    for its whole life); a parent already gone before this ran is checked by its pid."""
    if not kill_when_parent_dies() or os.getppid() != parent:
        os._exit(1)


def lower_thread_priority(increment: int) -> bool:
    """Raise the calling thread's nice value by `increment` (Linux schedules each thread as
    its own task; threads and processes it starts afterwards inherit the value). Without
    privilege it cannot be lowered again, so call it on a thread of its own that ends with
    the work. Returns False where the platform refuses."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError:
        return False
    return True
