"""Stat the folders to back up while the repository key is still being derived.

A command that opens a repository waits for scrypt (~0.3 s, started on its own thread before
the CLI is imported: cli/early_key.py). Once the imports are done, the main thread has
nothing to do until the key is ready, and a re-backup of an unchanged tree is mostly the
walk's per-file work that needs no key: the lstat, the listing of extended attributes and the
node's three times formatted. `collect` does that work in the walk's order (sorted names,
each folder's subfolders as they come) for as long as its `until` says the wait goes on, on
the calling thread (no GIL shared with the walk later), and keeps what it saw; the walk
(fs/archiver.py) takes each entry once instead of asking the kernel again, and does itself
whatever was not reached.

A stat taken here is as good as one the walk would take a moment later: a backup's walk is
not atomic either, and a file written after its stat is found changed by the next backup.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from safehold.fs.excludes import ExcludeMatcher
from safehold.fs.metadata import stat_times

_MAX_ENTRIES = 200_000  # bounds the memory of what waits for the walk
_CHECK_EVERY = 32  # entries between two calls of `until`


class Seen(NamedTuple):
    """What the walk needs of one entry: its lstat and, for a regular file or a folder, the
    node's times (mtime, atime, ctime as written, at the StatsAhead's UTC offset) and whether
    it has extended attributes."""

    st: os.stat_result
    times: tuple[str, str, str] | None = None
    has_xattrs: bool = False


@dataclass
class StatsAhead:
    """Entries and folder listings seen ahead of the walk, each handed out once."""

    offset: int
    entries: dict[bytes, Seen] = field(default_factory=dict)
    listings: dict[bytes, list[bytes]] = field(default_factory=dict)  # sorted names
    complete: bool = False  # every folder under the paths was seen

    def take(self, path: bytes) -> Seen | None:
        return self.entries.pop(path, None)

    def take_listing(self, path: bytes) -> list[bytes] | None:
        return self.listings.pop(path, None)


def collect(
    paths: list[bytes],
    excludes: list[str],
    offset: int,
    until: Callable[[], bool],
    check_every: int = _CHECK_EVERY,
) -> StatsAhead:
    """Stat `paths` and everything under them, depth first in the walk's order, until
    `until()` returns True (asked every `check_every` entries) or all is seen. Errors are
    left for the walk to meet and report: an entry that cannot be read is not kept."""
    ahead = StatsAhead(offset)
    matcher = ExcludeMatcher(excludes)
    budget = [check_every]

    def go_on() -> bool:
        budget[0] -= 1
        if budget[0] > 0:
            return True
        budget[0] = check_every
        return len(ahead.entries) < _MAX_ENTRIES and not until()

    stack: list[tuple[bytes, list[bytes], int]] = []  # folder, its sorted names, next one
    for path in paths:
        if not go_on():
            return ahead
        seen = _see(ahead, path)
        if seen is not None and stat.S_ISDIR(seen.st.st_mode):
            stack.append(_listed(ahead, path))
        while stack:
            folder, names, position = stack[-1]
            if position >= len(names):
                stack.pop()
                continue
            stack[-1] = (folder, names, position + 1)
            if not go_on():
                return ahead
            name = names[position]
            child = os.path.join(folder, name)
            if matcher and matcher.excluded(name, os.path.abspath(child)):
                continue
            seen = _see(ahead, child)
            if seen is not None and stat.S_ISDIR(seen.st.st_mode):
                stack.append(_listed(ahead, child))
    ahead.complete = True
    return ahead


def _see(ahead: StatsAhead, path: bytes) -> Seen | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        seen = Seen(st)
    else:
        try:
            has_xattrs = bool(os.listxattr(path, follow_symlinks=False))
        except OSError:
            has_xattrs = False  # as the walk's reading of them: none recorded
        seen = Seen(st, stat_times(st, ahead.offset), has_xattrs)
    ahead.entries[path] = seen
    return seen


def _listed(ahead: StatsAhead, folder: bytes) -> tuple[bytes, list[bytes], int]:
    try:
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError:
        return folder, [], 0  # the walk meets the error itself
    ahead.listings[folder] = names
    return folder, names, 0
