"""The parent's trees decoded ahead by a forked child (fs/treeprefetch.py), on a real local
repository: what the stream delivers, what it leaves to the walk, and that a backup with it
stores what a backup without it stores."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from safehold.backends.memory import MemoryBackend
from safehold.fs.archiver import Archiver, BackupOptions, BackupResult
from safehold.fs.treeprefetch import TreeStream
from safehold.repo.key import KdfParams
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.repo.walk import find_node
from tests.fs.conftest import reopen


def _make_tree(root: Path) -> None:
    for folder in ("a/b/c", "a/d", "e", "f/empty", "g/empty", "h"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index, folder in enumerate(("a", "a/b", "a/b/c", "a/d", "e", "h")):
        (root / folder / f"file{index}.txt").write_text(f"{folder} {index}\n" * (index + 1))
    # a name that spells a subtree key: escaped in the tree's JSON, so the child must not
    # take it for one
    (root / "a" / f'"subtree":"{"ab" * 32}"').write_text("tricky\n")
    past = time.time() - 3600  # relatime then moves each atime once, at the first listing
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past))
        os.utime(folder, (past, past))


def _source_tree(repo: Repository, result: BackupResult, source: Path) -> str | None:
    """The tree of `source` in the snapshot (not the root's: the folders above it are shared
    with other processes, /tmp among them, whose times move meanwhile)."""
    node, _ = find_node(reopen(repo), result.snapshot.tree, str(source))
    assert node is not None
    return node.subtree


def _backup(repo: Repository, source: Path, parent: BackupResult | None = None,
            **options: Any) -> BackupResult:  # fmt: skip
    archiver = Archiver(repo, BackupOptions(**options))
    return archiver.backup([str(source)], parent=parent.snapshot if parent else None)


def _nodes(repo: Repository, tree_id: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = json.loads(repo.load_blob(tree_id, BlobType.TREE))["nodes"]
    return nodes


def _walk_order(repo: Repository, tree_id: str) -> list[str]:
    """The subtree ids below `tree_id` in the order a backup's walk asks for them."""
    order = []
    for node in _nodes(repo, tree_id):
        if node["type"] == "dir" and node.get("subtree"):
            order.append(node["subtree"])
            order.extend(_walk_order(repo, node["subtree"]))
    return order


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_the_stream_brings_every_subtree_in_the_walks_order(
    repo: Repository, tmp_path: Path
) -> None:
    _make_tree(tmp_path / "src")
    root = _backup(repo, tmp_path / "src").snapshot.tree
    order = _walk_order(repo, root)
    assert len(order) > len(set(order))  # the two empty folders share one tree
    stream = TreeStream.start(repo, _nodes(repo, root))
    assert stream is not None and stream.pid is not None
    pid = stream.pid
    try:
        for tree_id in order:
            assert stream.load(tree_id) == repo.load_blob(tree_id, BlobType.TREE)
            assert stream.read_past == 0  # exactly the walk's order, nothing else in between
        assert stream.load(order[0]) is None  # the stream has ended: loaded by the caller
        assert stream.read_past == 0
    finally:
        stream.close()
    assert _reaped(pid) and stream.pid is None


def test_trees_asked_for_out_of_order_or_not_at_all(repo: Repository, tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    root = _backup(repo, tmp_path / "src").snapshot.tree
    order = list(dict.fromkeys(_walk_order(repo, root)))
    stream = TreeStream.start(repo, _nodes(repo, root))
    assert stream is not None
    try:
        # a folder the walk skips (deleted since): the trees read past it are kept
        assert stream.load(order[3]) == repo.load_blob(order[3], BlobType.TREE)
        assert stream.load(order[1]) == repo.load_blob(order[1], BlobType.TREE)
        assert stream.load("00" * 32) is None  # not in the parent: the caller loads it
        assert stream.load(order[-1]) == repo.load_blob(order[-1], BlobType.TREE)
    finally:
        stream.close()
    stream.close()  # twice is harmless


def test_a_child_killed_mid_stream_costs_only_speed(repo: Repository, tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    first = _backup(repo, tmp_path / "src")
    stream = TreeStream.start(repo, _nodes(repo, first.snapshot.tree))
    assert stream is not None and stream.pid is not None
    os.kill(stream.pid, signal.SIGKILL)
    for tree_id in _walk_order(repo, first.snapshot.tree):
        got = stream.load(tree_id)
        assert got is None or got == repo.load_blob(tree_id, BlobType.TREE)
    stream.close()
    assert stream.pid is None


def test_a_rebackup_with_the_stream_stores_what_one_without_it_stores(
    repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    _make_tree(source)
    first = _backup(repo, source)
    # since the parent: a file changed, a folder gone, a folder new, one moved
    (source / "a" / "b" / "file1.txt").write_text("changed\n")
    for name in os.listdir(source / "a" / "d"):
        os.unlink(source / "a" / "d" / name)
    os.rmdir(source / "a" / "d")
    (source / "b2" / "new").mkdir(parents=True)
    (source / "b2" / "new" / "x.txt").write_text("new\n")
    os.rename(source / "e", source / "z")
    time.sleep(0.05)  # a later clock tick: the next listing settles the folders' atimes
    without = _backup(reopen(repo), source, first, prefetch_trees=False)
    with_stream = _backup(reopen(repo), source, first)
    again = _backup(reopen(repo), source, first, prefetch_trees=False)
    # atimes settled after `without`
    assert _source_tree(repo, with_stream, source) == _source_tree(repo, again, source)
    counts = ("files_new", "files_changed", "files_unmodified", "dirs", "bytes_read")
    for stats in (without.stats, again.stats):
        assert [getattr(stats, n) for n in counts] == [
            getattr(with_stream.stats, n) for n in counts
        ]
    assert with_stream.stats.files_changed == 1 and with_stream.stats.files_new == 2


def test_remote_storage_gets_no_child(tmp_path: Path) -> None:
    """The memory backend stands for remote storage: no local path, so no fork."""
    repo = Repository.init(MemoryBackend(), b"pw", kdf=KdfParams(n=1024, r=8, p=1))
    assert TreeStream.start(repo, []) is None
