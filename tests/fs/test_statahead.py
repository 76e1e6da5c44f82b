"""Stat'ing the folders to back up ahead of the walk (fs/statahead.py), on real files: what
`collect` keeps, where it stops, and that a backup taking its entries stores what a backup
without them stores."""

from __future__ import annotations

import os
import time
from pathlib import Path

from safehold.fs.archiver import Archiver, BackupOptions, BackupResult, target_paths
from safehold.fs.metadata import stat_times
from safehold.fs.statahead import StatsAhead, collect
from safehold.repo.repository import Repository
from safehold.repo.walk import find_node
from tests.fs.conftest import reopen


def _make_tree(root: Path) -> list[bytes]:
    """A small tree, times an hour old; returns its paths in the walk's order."""
    for folder in ("a/b", "a/c", "d", "skip/deep"):
        (root / folder).mkdir(parents=True)
    for rel in ("a/b/one.txt", "a/two.txt", "d/three.txt", "skip/deep/x.txt", "top.txt"):
        (root / rel).write_text(rel * 3)
    os.symlink("top.txt", root / "link")
    past = time.time() - 3600
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past), follow_symlinks=False)
        os.utime(folder, (past, past))
    order = []
    for rel in ("", "a", "a/b", "a/b/one.txt", "a/c", "a/two.txt", "d", "d/three.txt",
                "link", "skip", "skip/deep", "skip/deep/x.txt", "top.txt"):  # fmt: skip
        order.append(os.fsencode(root / rel) if rel else os.fsencode(root))
    return order


def _source_tree(repo: Repository, result: BackupResult, source: Path) -> str | None:
    """The tree of `source` in the snapshot (not the root's: the folders above it are shared
    with other processes, /tmp among them, whose times move meanwhile)."""
    node, _ = find_node(reopen(repo), result.snapshot.tree, str(source))
    assert node is not None
    return node.subtree


def _backup(repo: Repository, source: Path, parent: BackupResult | None = None,
            ahead: StatsAhead | None = None) -> BackupResult:  # fmt: skip
    archiver = Archiver(repo, BackupOptions(stats_ahead=ahead))
    return archiver.backup([str(source)], parent=parent.snapshot if parent else None)


def test_collect_sees_everything_in_the_walks_order(tmp_path: Path) -> None:
    order = _make_tree(tmp_path / "src")
    ahead = collect(target_paths([str(tmp_path / "src")]), [], 3600, until=lambda: False)
    assert ahead.complete
    assert list(ahead.entries) == [p.rstrip(b"/") for p in order]
    one = ahead.entries[order[3]]
    assert one.times == stat_times(os.lstat(order[3]), 3600) and not one.has_xattrs
    assert ahead.entries[os.fsencode(tmp_path / "src" / "link")].times is None  # not a file
    assert ahead.listings[order[1]] == [b"b", b"c", b"two.txt"]


def test_collect_skips_excluded_folders_and_stops_when_told(tmp_path: Path) -> None:
    order = _make_tree(tmp_path / "src")
    paths = target_paths([str(tmp_path / "src")])
    ahead = collect(paths, ["skip"], 0, until=lambda: False)
    assert ahead.complete and os.fsencode(tmp_path / "src" / "skip") not in ahead.entries
    calls = []

    def until() -> bool:
        calls.append(1)
        return True

    stopped = collect(paths, [], 0, until=until, check_every=4)
    assert len(calls) == 1 and not stopped.complete and len(stopped.entries) == 3
    assert list(stopped.entries) == order[: len(stopped.entries)]  # what it saw: the start


def test_a_backup_taking_the_entries_stores_what_one_without_them_stores(
    repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    _make_tree(source)
    first = _backup(repo, source)
    (source / "a" / "two.txt").write_text("changed\n")
    (source / "d" / "new.txt").write_text("new\n")
    time.sleep(0.05)  # a later clock tick: the next listing settles the folders' atimes
    without = _backup(reopen(repo), source, first)  # lists the folders: their atimes settle
    ahead = collect(target_paths([str(source)]), [], repo.clock().offset, until=lambda: False)
    with_ahead = _backup(reopen(repo), source, first, ahead)
    assert ahead.entries == {} and ahead.listings == {}  # every entry taken by the walk
    again = _backup(reopen(repo), source, first)
    assert _source_tree(repo, with_ahead, source) == _source_tree(repo, again, source)
    assert without.stats.files_changed == with_ahead.stats.files_changed == 1
    assert with_ahead.stats.files_new == 1 and with_ahead.stats.files_unmodified == 4


def test_entries_formatted_at_another_offset_keep_only_their_stat(
    repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    _make_tree(source)
    first = _backup(repo, source)
    offset = repo.clock().offset + 3600  # a DST change between collect and the backup
    ahead = collect(target_paths([str(source)]), [], offset, until=lambda: False)
    second = _backup(reopen(repo), source, first, ahead)
    again = _backup(reopen(repo), source, first)
    assert _source_tree(repo, second, source) == _source_tree(repo, again, source)
    assert second.stats.files_unmodified == 5 and second.stats.bytes_read == 0
