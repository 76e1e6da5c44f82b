"""Compare a live folder with a folder of a snapshot, as a backup would see it.

A file is the same when its type, size and mtime equal the snapshot's node (the test the
archiver uses to skip unchanged files), else changed; a live file newer (mtime) than the
snapshot's copy is marked `newer`: it holds writes made after the backup, and restores never
replace it silently. Entries only in the snapshot are missing; entries only in the live
folder are added (excluded names are ignored, as the backup ignored them). Folders are
walked, not reported themselves, except a folder missing as a whole, reported once with the
number of files under it.

Looks only: nothing is changed. Used by the incident scope and by restores into a live
folder (`--only-missing`, `--changed`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from safehold.fs.excludes import ExcludeMatcher
from safehold.repo.repository import Repository
from safehold.repo.tree import Node

MISSING = "missing"  # in the snapshot, not in the live folder
ADDED = "added"  # in the live folder, not in the snapshot
CHANGED = "changed"  # both, different size, mtime or type
SAME = "same"


@dataclass(frozen=True)
class LiveEntry:
    """One file (or a missing folder) compared: its path relative to the folder, '/'-joined."""

    path: str
    status: str  # MISSING, ADDED, CHANGED or SAME
    kind: str  # the snapshot's node type (the live one for ADDED)
    files: int = 1  # a missing folder: the files under it
    newer: bool = False  # CHANGED: the live file's mtime is after the snapshot copy's
    live_mtime_ns: int | None = None
    snapshot_mtime_ns: int | None = None
    live_size: int | None = None
    snapshot_size: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": self.status,
            "type": self.kind,
            "files": self.files,
            "newer": self.newer,
            "live_size": self.live_size,
            "snapshot_size": self.snapshot_size,
        }


@dataclass
class LiveDiff:
    entries: list[LiveEntry] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # live paths that could not be read

    def of(self, status: str) -> list[LiveEntry]:
        return [entry for entry in self.entries if entry.status == status]

    def count(self, status: str) -> int:
        """Files with this status (a missing folder counts its files)."""
        return sum(entry.files for entry in self.of(status))

    @property
    def newer(self) -> list[LiveEntry]:
        return [entry for entry in self.entries if entry.newer]

    def counts(self) -> dict[str, int]:
        return {
            "missing": self.count(MISSING),
            "added": self.count(ADDED),
            "changed": self.count(CHANGED),
            "newer": len(self.newer),
            "same": self.count(SAME),
        }


def compare_live(
    repo: Repository, tree_id: str, live: str | os.PathLike[str], excludes: list[str] | None = None
) -> LiveDiff:
    """Compare the snapshot folder `tree_id` with the live folder `live` (which may be gone:
    then everything is missing)."""
    diff = LiveDiff()
    matcher = ExcludeMatcher(list(excludes or []))
    _compare(repo, tree_id, os.fsencode(os.path.abspath(live)), "", matcher, diff)
    return diff


def _listing(folder: bytes, diff: LiveDiff, relative: str) -> dict[bytes, os.stat_result]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    except OSError as err:
        diff.unreadable.append(f"{relative or '.'}: {err.strerror}")
        return {}
    found: dict[bytes, os.stat_result] = {}
    for name in names:
        try:
            found[name] = os.lstat(os.path.join(folder, name))
        except OSError:
            continue  # removed while we looked
    return found


def _kind(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "other"


def _join(relative: str, name: bytes) -> str:
    text = os.fsdecode(name)
    return f"{relative}/{text}" if relative else text


def _compare(
    repo: Repository,
    tree_id: str,
    folder: bytes,
    relative: str,
    matcher: ExcludeMatcher,
    diff: LiveDiff,
) -> None:
    live = _listing(folder, diff, relative)
    nodes = {node.name: node for node in repo.load_tree(tree_id)}
    for name, node in nodes.items():
        path = _join(relative, name)
        st = live.pop(name, None)
        if st is None:
            files = _count_files(repo, node) if node.type == "dir" else 1
            diff.entries.append(
                LiveEntry(
                    path,
                    MISSING,
                    node.type,
                    files,
                    snapshot_mtime_ns=node.mtime.ns,
                    snapshot_size=node.size,
                )
            )
            continue
        kind = _kind(st)
        if node.type == "dir" and kind == "dir":
            if node.subtree:
                _compare(repo, node.subtree, os.path.join(folder, name), path, matcher, diff)
            continue
        if node.type == "dir" or kind == "dir":  # a folder became a file, or the other way
            diff.entries.append(
                LiveEntry(
                    path,
                    CHANGED,
                    node.type,
                    1,
                    st.st_mtime_ns > node.mtime.ns,
                    st.st_mtime_ns,
                    node.mtime.ns,
                    st.st_size,
                    node.size,
                )
            )
            continue
        same = kind == node.type and _same_content(folder, name, st, node)
        newer = not same and st.st_mtime_ns > node.mtime.ns
        diff.entries.append(
            LiveEntry(
                path,
                SAME if same else CHANGED,
                node.type,
                1,
                newer,
                st.st_mtime_ns,
                node.mtime.ns,
                st.st_size,
                node.size,
            )
        )
    for name, st in sorted(live.items()):
        if name.startswith(b".safehold-restore-"):
            continue
        full = os.path.join(folder, name)
        if matcher and matcher.excluded(name, full):
            continue
        path = _join(relative, name)
        kind = _kind(st)
        files = sum(1 for _ in _live_files(full)) if kind == "dir" else 1
        diff.entries.append(
            LiveEntry(path, ADDED, kind, files, live_mtime_ns=st.st_mtime_ns, live_size=st.st_size)
        )


def _same_content(folder: bytes, name: bytes, st: os.stat_result, node: Node) -> bool:
    if node.type == "symlink":
        try:
            return os.readlink(os.path.join(folder, name)) == node.linktarget
        except OSError:
            return False
    if node.type != "file":
        return True  # fifos, devices: their type is all there is
    return st.st_size == node.size and st.st_mtime_ns == node.mtime.ns


def _count_files(repo: Repository, node: Node) -> int:
    count = 0
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "dir":
            if current.subtree:
                stack.extend(repo.load_tree(current.subtree))
        else:
            count += 1
    return count


def _live_files(folder: bytes) -> Iterator[bytes]:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            yield os.path.join(root, name)
