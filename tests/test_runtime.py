"""runtime: the allocator settings, measured in a child process of their own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

_FAULTS = """
import resource, sys
from safehold.runtime import keep_freed_heap, tune_allocator
tune_allocator()
if sys.argv[1] == "keep":
    keep_freed_heap()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffer = bytearray(16 << 20)  # the heap grows once to hold it
del buffer
before = faults()
for _ in range(20):
    buffer = bytearray(16 << 20)  # zero-filled: every page written
    del buffer
print(faults() - before)
"""


def _faults(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_kept_heap_serves_the_next_buffer_without_page_faults() -> None:
    """Without keep_freed_heap, glibc hands a freed 16 MiB buffer back to the kernel and the
    next one is faulted in page by page (20 x 4,096 pages); with it, the same memory is used
    again."""
    pages = 20 * (16 << 20) // 4096
    assert _faults("default") > pages // 4
    assert _faults("keep") < pages // 20
