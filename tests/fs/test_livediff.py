"""compare_live: a live folder against a snapshot folder, by type, size and mtime."""

from __future__ import annotations

import os
from pathlib import Path

from safehold.backends.local import LocalBackend
from safehold.fs.archiver import Archiver
from safehold.fs.livediff import compare_live
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.walk import find_node


def test_missing_added_changed_newer_and_excluded(tmp_path: Path) -> None:
    live = tmp_path / "media"
    (live / "deep" / "gone").mkdir(parents=True)
    for name in ("same.txt", "grows.txt", "older.txt", "deep/kept.txt", "deep/gone/x.txt"):
        (live / name).write_text(name)
    (live / "deep" / "gone" / "y.txt").write_text("y")
    (live / "turns-dir").write_text("file first")
    os.symlink("same.txt", live / "link")
    past = 1_700_000_000
    for path in live.rglob("*"):
        os.utime(path, (past, past), follow_symlinks=False)
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(n=1024, r=8, p=1))
    snapshot = Archiver(repo).backup([str(live)]).snapshot
    _node, subtree = find_node(repo, snapshot.tree, str(live))
    assert subtree is not None

    (live / "grows.txt").write_text("grows.txt and more")  # mtime now: newer
    (live / "older.txt").write_text("older.TXT")  # same size, older mtime: changed, not newer
    os.utime(live / "older.txt", (past - 10, past - 10))
    for name in ("x.txt", "y.txt"):
        (live / "deep" / "gone" / name).unlink()
    (live / "deep" / "gone").rmdir()
    (live / "turns-dir").unlink()
    (live / "turns-dir").mkdir()
    (live / "link").unlink()
    os.symlink("elsewhere", live / "link")
    (live / "new.txt").write_text("new")
    (live / "cache.tmp").write_text("excluded")

    diff = compare_live(repo, subtree, live, excludes=["*.tmp"])
    got = {e.path: (e.status, e.newer, e.files) for e in diff.entries}
    assert got == {
        "same.txt": ("same", False, 1),
        "grows.txt": ("changed", True, 1),
        "older.txt": ("changed", False, 1),
        "deep/kept.txt": ("same", False, 1),
        "deep/gone": ("missing", False, 2),  # a missing folder once, with its files
        "turns-dir": ("changed", True, 1),
        "link": ("changed", True, 1),
        "new.txt": ("added", False, 1),
    }
    assert diff.counts() == {"missing": 2, "added": 1, "changed": 4, "newer": 3, "same": 2}
    gone = compare_live(repo, subtree, tmp_path / "no-such-folder")
    assert gone.count("missing") == 8 and gone.count("added") == 0
