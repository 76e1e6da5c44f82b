"""Compare restored files on disk with the snapshot they came from, byte for byte.

Each regular file is read back in the pieces the snapshot recorded (the plaintext lengths of
its content blobs, from the index) and every piece must hash to its blob id: that proves the
bytes on disk are the bytes that were backed up, without reading the repository again.
Folders, symlinks and sizes are compared too. Used by drills (the default "file contents
match the snapshot" check)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from safehold.repo.repository import Repository
from safehold.repo.walk import find_node, walk_tree

_MAX_PROBLEMS = 50


@dataclass
class TreeComparison:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(problem)


def compare_restored_tree(
    repo: Repository, tree_id: str, snapshot_path: str, target: Path
) -> TreeComparison:
    """Compare the snapshot subtree at `snapshot_path` (like `/uploads`) with `target`, the
    folder it was restored into (the subtree's entries are directly under `target`)."""
    result = TreeComparison()
    _node, subtree = find_node(repo, tree_id, snapshot_path)
    if subtree is None:
        result.add(f"{snapshot_path} is not a folder in the snapshot")
        return result
    seen: set[str] = set()
    for path, node in walk_tree(repo, subtree):
        relative = path.lstrip("/")
        seen.add(relative)
        on_disk = target / relative
        if node.type == "dir":
            result.dirs += 1
            if not on_disk.is_dir() or on_disk.is_symlink():
                result.add(f"{relative}/: folder missing")
        elif node.type == "symlink":
            if not on_disk.is_symlink():
                result.add(f"{relative}: symlink missing")
            elif os.fsencode(os.readlink(on_disk)) != node.linktarget:
                result.add(f"{relative}: symlink points elsewhere")
        elif node.type == "file":
            result.files += 1
            result.bytes += node.size
            _compare_file(repo, node.content or [], node.size, on_disk, relative, result)
    for extra in _extra_entries(target, seen):
        result.add(f"{extra}: on disk but not in the snapshot")
    return result


def _compare_file(
    repo: Repository, content: list[str], size: int, path: Path, name: str, result: TreeComparison
) -> None:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        result.add(f"{name}: missing")
        return
    except OSError as err:
        result.add(f"{name}: cannot be read ({err.strerror})")
        return
    with handle:
        actual_size = os.fstat(handle.fileno()).st_size
        if actual_size != size:
            result.add(f"{name}: {actual_size:,} bytes, the snapshot has {size:,}")
            return
        index = repo.index
        for number, blob_id in enumerate(content):
            location = index.lookup(blob_id)
            if location is None:
                result.add(f"{name}: part {number + 1} is missing from the repository index")
                return
            piece = handle.read(location.blob.plaintext_length)
            if hashlib.sha256(piece).hexdigest() != blob_id:
                result.add(f"{name}: content differs from the snapshot (part {number + 1})")
                return


def _extra_entries(target: Path, seen: set[str]) -> list[str]:
    extra = []
    for dirpath, dirnames, filenames in os.walk(target):
        base = os.path.relpath(dirpath, target)
        for name in [*dirnames, *filenames]:
            relative = name if base == "." else f"{base}/{name}"
            if relative not in seen:
                extra.append(relative)
        dirnames[:] = [d for d in dirnames if (d if base == "." else f"{base}/{d}") in seen]
    return sorted(extra)
