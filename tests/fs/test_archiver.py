"""The archiver through its Python API, on a real LocalBackend repository in tmp_path."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import monotonic, sleep
from typing import Any, BinaryIO

import pytest

from safehold.app.backup import BackupRequest, run_backup
from safehold.fs.archiver import Archiver, BackupOptions, BackupResult
from safehold.fs.restorer import Restorer
from safehold.repo.check import Checker
from safehold.repo.pack import BlobType
from safehold.repo.progress import Progress
from safehold.repo.repository import Repository
from safehold.repo.walk import walk_tree
from tests.fs.conftest import reopen as _reopen

MIB = 1024 * 1024


def _make_tree(root: Path, seed: int = 1) -> int:
    """A small tree; returns the number of regular files."""
    rng = random.Random(seed)
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    files = {
        "top.txt": b"top\n",
        "a/one.bin": rng.randbytes(100_000),
        "a/b/two.bin": rng.randbytes(700_000),  # above the single-blob limit: chunked
        "a/b/zero": b"",
        "big.bin": rng.randbytes(3 * MIB),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.symlink("top.txt", root / "link")
    return len(files)


def _backup(repo: Repository, paths: list[Path], parent: BackupResult | None = None,
            **options: object) -> BackupResult:  # fmt: skip
    archiver = Archiver(repo, BackupOptions(**options))  # type: ignore[arg-type]
    return archiver.backup(
        [str(p) for p in paths], parent=parent.snapshot if parent is not None else None
    )


def _restore(repo: Repository, result: BackupResult, target: Path) -> Path:
    stats = Restorer(repo).restore(result.snapshot, str(target))
    assert stats.errors == []
    return target


def _digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Relative path -> (kind, mode, mtime_ns, content hash or link target)."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if path.is_symlink():
                what: object = os.readlink(path)
            elif path.is_dir():
                what = "dir"
            else:
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            result[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, what)
    return result


def _restored(target: Path, source: Path) -> Path:
    return target / str(source).lstrip("/")


def _tree_without_atimes(repo: Repository, tree_id: str) -> list[tuple[str, dict[str, object]]]:
    """Every node of a snapshot tree, recursively, as JSON without atime and subtree ids."""
    out = []
    for node in json.loads(repo.load_blob(tree_id, BlobType.TREE))["nodes"]:
        subtree = node.pop("subtree", None)
        node.pop("atime", None)
        out.append((node["name"], node))
        if subtree:
            out.extend((f"{node['name']}/{n}", v) for n, v in _tree_without_atimes(repo, subtree))
    return out


# ----- unchanged and changed files ---------------------------------------------------------


def test_unchanged_rebackup_reads_nothing_and_yields_the_same_tree(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    count = _make_tree(src)
    # Times an hour old, so relatime moves each atime exactly once (at the first read): with
    # a fresh tree, atime and mtime can fall in the same clock tick, and then a later listing
    # moves a directory's atime again and changes the tree.
    past = time.time() - 3600
    for folder, _, files in os.walk(src, topdown=False):
        for name in files:
            os.utime(os.path.join(folder, name), (past, past))
        os.utime(folder, (past, past))
    first = _backup(repo, [src])
    assert first.stats.files_new == count and first.stats.bytes_read > 3 * MIB

    second = _backup(repo, [src], parent=first)
    assert second.stats.bytes_read == 0
    assert second.stats.files_unmodified == count
    assert second.stats.files_new == second.stats.files_changed == 0
    assert second.stats.bytes_added == 0 or second.stats.data_blobs_new == 0
    assert second.snapshot.parent == first.snapshot.id

    # The first backup read every file and listed every directory, which moved their atimes
    # (relatime), and nodes record atime: so the root tree id may differ between the first
    # two runs, but only in atime. From then on nothing moves, and the tree id is identical.
    assert _tree_without_atimes(repo, first.snapshot.tree) == _tree_without_atimes(
        repo, second.snapshot.tree
    )
    third = _backup(_reopen(repo), [src], parent=second)
    assert third.stats.bytes_read == 0
    assert third.snapshot.tree == second.snapshot.tree


def test_a_modified_file_is_read_again(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    count = _make_tree(src)
    first = _backup(repo, [src])

    # same size, new content and new mtime
    one = src / "a" / "one.bin"
    before = one.stat()
    one.write_bytes(random.Random(99).randbytes(before.st_size))
    os.utime(one, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    second = _backup(repo, [src], parent=first)
    assert second.stats.files_changed == 1
    assert second.stats.files_unmodified == count - 1
    assert second.stats.bytes_read == before.st_size

    # same size and the *old* mtime put back: only the ctime tells, and it is checked
    one.write_bytes(random.Random(100).randbytes(before.st_size))
    os.utime(one, ns=(before.st_atime_ns, before.st_mtime_ns))
    third = _backup(repo, [src], parent=second)
    assert third.stats.files_changed == 1
    assert third.stats.bytes_read == before.st_size

    target = _restore(repo, third, tmp_path / "restore")
    assert _digest(_restored(target, src)) == _digest(src)


def test_read_all_ignores_the_parent(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src)
    first = _backup(repo, [src])
    forced = _backup(repo, [src], parent=first, read_all=True)
    assert forced.stats.bytes_read == first.stats.bytes_read
    assert forced.stats.files_unmodified == 0
    assert forced.stats.data_blobs_new == 0  # read again, but every chunk was already stored


def test_inserting_1_kib_in_a_100_mib_file_adds_only_a_few_mib(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    data = random.Random(5).randbytes(100 * MIB)
    big.write_bytes(data)
    first = _backup(repo, [src], compression_level=None)
    assert first.stats.bytes_added >= 100 * MIB

    middle = 50 * MIB + 12_345
    big.write_bytes(data[:middle] + random.Random(6).randbytes(1024) + data[middle:])
    del data
    second = _backup(repo, [src], parent=first, compression_level=None)
    assert second.stats.files_changed == 1
    assert second.stats.bytes_read == 100 * MIB + 1024
    # content-defined chunks (avg 1 MiB, max 8 MiB): only the chunks around the insertion
    # are new, one or two of them
    print("bytes added by the insertion:", second.stats.bytes_added)
    assert 1024 < second.stats.bytes_added <= 8 * MIB, second.stats.bytes_added
    assert second.stats.data_blobs_new <= 3

    target = _restore(repo, second, tmp_path / "restore")
    restored = _restored(target, src) / "big.bin"
    assert (
        hashlib.sha256(restored.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    )


# ----- excludes, hardlinks, symlinked parents ----------------------------------------------


def test_excludes(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src)
    (src / "a" / "junk.tmp").write_text("x")
    (src / "a" / "b" / "more.tmp").write_text("x")
    (src / "node_modules" / "pkg").mkdir(parents=True)
    (src / "node_modules" / "pkg" / "index.js").write_text("x")
    (src / "a" / "b" / "node_modules").mkdir()
    (src / "logs").mkdir()
    (src / "logs" / "app.log").write_text("x")
    (src / "a" / "logs").mkdir()
    (src / "a" / "logs" / "keep.log").write_text("keep")

    result = _backup(repo, [src], excludes=["*.tmp", "node_modules", f"{src}/logs"])
    paths = {path for path, _ in walk_tree(repo, result.snapshot.tree)}
    base = str(src)
    assert not [p for p in paths if p.endswith(".tmp") or "node_modules" in p]
    assert base + "/logs" not in paths
    assert base + "/a/logs/keep.log" in paths
    assert base + "/a/b/two.bin" in paths
    assert result.snapshot.excludes == ["*.tmp", "node_modules", f"{src}/logs"]

    deep = _backup(repo, [src], excludes=["a/**/*.bin"])
    paths = {path for path, _ in walk_tree(repo, deep.snapshot.tree)}
    assert base + "/a/b/two.bin" not in paths and base + "/a/one.bin" not in paths
    assert base + "/big.bin" in paths and base + "/a/b/zero" in paths


def test_hardlinks_are_read_once_and_restored_as_hardlinks(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "h1").write_bytes(random.Random(3).randbytes(2 * MIB))
    os.link(src / "h1", src / "h2")
    os.link(src / "h1", src / "sub" / "h3")
    (src / "other").write_bytes(b"other")
    result = _backup(repo, [src])
    assert result.stats.files_new == 4
    assert result.stats.bytes_read == 2 * MIB + 5
    assert result.stats.bytes_total == 3 * 2 * MIB + 5

    target = _restore(_reopen(repo), result, tmp_path / "restore")
    restored = _restored(target, src)
    inodes = {(restored / rel).stat().st_ino for rel in ("h1", "h2", "sub/h3")}
    assert len(inodes) == 1
    assert (restored / "h1").stat().st_nlink == 3
    assert (restored / "other").stat().st_nlink == 1
    assert _digest(restored) == _digest(src)


def test_a_target_below_a_symlinked_directory_is_backed_up(
    repo: Repository, tmp_path: Path
) -> None:
    """`/var/run/app` when /var/run -> /run: the parent is followed as restic does, so the
    files end up in the snapshot (an lstat-ed parent became a symlink node and the files under
    it were silently never restored)."""
    real = tmp_path / "real"
    (real / "app").mkdir(parents=True)
    (real / "app" / "state.db").write_bytes(b"state")
    os.symlink(real, tmp_path / "alias")
    result = _backup(repo, [tmp_path / "alias" / "app"])
    nodes = dict(walk_tree(repo, result.snapshot.tree))
    alias = str(tmp_path / "alias").lstrip("/")
    assert nodes["/" + alias].type == "dir"
    assert nodes["/" + alias + "/app/state.db"].size == 5
    target = tmp_path / "restore"
    _restore(repo, result, target)
    assert (target / alias / "app" / "state.db").read_bytes() == b"state"


def test_a_file_that_vanishes_mid_backup_is_an_error_not_a_crash(
    repo: Repository, tmp_path: Path
) -> None:
    """The file is deleted after the directory was listed; its name is not UTF-8, and the
    error message, which goes into the snapshot's JSON, must still encode."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"first")
    vanishing = os.path.join(os.fsencode(src), b"b-\xff-vanishing")
    with open(vanishing, "wb") as handle:
        handle.write(b"gone soon")
    (src / "c.txt").write_bytes(b"last")

    def progress(report: Progress) -> None:
        if report.current.endswith("a.txt") and os.path.lexists(vanishing):
            os.unlink(vanishing)

    result = Archiver(repo, BackupOptions(), progress).backup([str(src)])
    assert [path for path, _ in result.stats.errors] == [str(src) + "/b-\ufffd-vanishing"]
    assert result.snapshot.complete is False
    (stored,) = _reopen(repo).list_snapshots()
    assert stored.complete is False
    assert "No such file or directory" in stored.safehold["errors"][0]
    names = {path for path, _ in walk_tree(repo, stored.tree)}
    assert str(src) + "/a.txt" in names and str(src) + "/c.txt" in names


# ----- interruption ------------------------------------------------------------------------


class _Stop(Exception):
    pass


def test_an_interrupted_backup_leaves_a_valid_repository(
    repo: Repository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(8)
    for number in range(48):  # 12 directories: index files are written as directories finish
        (src / f"d{number // 4:02d}").mkdir(exist_ok=True)
        (src / f"d{number // 4:02d}" / f"f{number:02d}.bin").write_bytes(rng.randbytes(300_000))
    earlier = _backup(repo, [tmp_path / "src" / "d00"])
    blobs_before = len(_reopen(repo).index)
    index_dir = Path(repo.backend.location) / "index"
    indexes_before = len(os.listdir(index_dir))

    # the run is cut short right after it wrote its first index file mid-way: the moment where
    # indexed packs, packs not yet indexed and queued blobs all exist at once
    save_index = repo.save_index

    def save_index_then_stop(packs: dict[str, list[Any]], supersedes: list[str]) -> list[str]:
        save_index(packs, supersedes)
        raise _Stop("interrupted by the test")

    # small packs, an index every 2 packs, little data in flight
    options = BackupOptions(
        pack_size=512 * 1024,
        index_every_packs=2,
        compression_level=None,
        max_inflight_bytes=700_000,
    )
    request = BackupRequest([str(src)], options=options)
    repo.save_index = save_index_then_stop  # type: ignore[method-assign]
    with pytest.raises(_Stop):
        run_backup(repo, request)
    repo.save_index = save_index  # type: ignore[method-assign]
    assert len(os.listdir(index_dir)) == indexes_before + 1  # it stopped mid-way, indexed
    assert os.listdir(Path(repo.backend.location) / "locks") == []  # the lock was released
    # cancelled work is dropped quietly (a callback used to log a CancelledError traceback)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    fresh = _reopen(repo)
    assert [s.id for s in fresh.list_snapshots()] == [earlier.snapshot.id]
    report = Checker(fresh).run(read_data=True)
    assert report.errors == []
    assert len(fresh.index) > blobs_before  # the interrupted run indexed some of its packs

    result = _backup(fresh, [src])
    assert result.stats.errors == []
    assert result.stats.bytes_added < 48 * 300_000  # reuses what the interrupted run stored
    target = _restore(_reopen(repo), result, tmp_path / "restore")
    assert _digest(_restored(target, src)) == _digest(src)
    assert Checker(_reopen(repo)).run(read_data=True).errors == []


def test_ctrl_c_stores_and_indexes_the_work_in_flight(repo: Repository, tmp_path: Path) -> None:
    """KeyboardInterrupt on the walk (what Ctrl-C and the CLI's SIGTERM handler raise) half-way:
    the queued blobs are packed, the partly filled packs stored, and all of it indexed."""
    from safehold.errors import BackupInterruptedError, ExitCode

    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(31)
    for number in range(40):
        (src / f"f{number:02d}.bin").write_bytes(rng.randbytes(200_000))
    total = 40 * 200_000

    read_when_interrupted: list[int] = []

    def interrupt_half_way(report: Progress) -> None:
        # a signal lands on the main thread, which walks; the readers report too
        if threading.current_thread() is not threading.main_thread() or read_when_interrupted:
            return
        if report.current.endswith("f30.bin"):  # the walk is ahead: wait for the readers
            deadline = monotonic() + 30
            while archiver.stats.bytes_read < total // 2 and monotonic() < deadline:
                sleep(0.001)
            read_when_interrupted.append(archiver.stats.bytes_read)
            raise KeyboardInterrupt

    options = BackupOptions(pack_size=512 * 1024, compression_level=None, index_interval=None)
    archiver = Archiver(repo, options, interrupt_half_way)
    with pytest.raises(BackupInterruptedError) as caught:
        archiver.backup([str(src)])
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert "MiB kept for the next backup" in caught.value.message

    fresh = _reopen(repo)
    assert fresh.list_snapshots() == []
    index = fresh.index
    kept = sum(loc.blob.plaintext_length for b in index.blob_ids() if (loc := index.lookup(b)))
    assert kept == caught.value.kept_bytes
    # every file read before the interrupt had its blobs queued, and all of them were kept
    assert 0 < read_when_interrupted[0] <= kept < total
    stored = {p.name for p in (Path(repo.backend.location) / "data").rglob("*") if p.is_file()}
    assert stored == set(fresh.index.packs)  # no pack left unindexed
    assert Checker(fresh).run(read_data=True).errors == []

    result = _backup(fresh, [src])
    added = result.stats.bytes_added  # the missing data, and the two small trees
    assert total - kept <= added <= total - kept + 20_000
    assert added <= total * 0.55


def test_the_index_timer_indexes_stored_packs_while_the_backup_runs(
    repo: Repository, tmp_path: Path
) -> None:
    """A slow stream (a dump that takes long): the timer writes the index of the packs stored
    so far while the stream is still being read, so a kill -9 then keeps them. (The chunker
    reads 10 MiB ahead: by 16 MiB read, several packs of 512 KiB are stored.)"""
    from safehold.fs.archiver import BackupItem

    index_dir = Path(repo.backend.location) / "index"
    rng = random.Random(32)
    seen_mid_way: list[int] = []

    class SlowStream:
        def __init__(self) -> None:
            self.sent = 0

        def readinto(self, buffer: memoryview) -> int:
            if self.sent >= 24 * MIB:
                return 0
            if self.sent >= 16 * MIB and not seen_mid_way:  # half-way: wait for the timer
                deadline = monotonic() + 10
                while not os.listdir(index_dir) and monotonic() < deadline:
                    sleep(0.01)
                seen_mid_way.append(len(os.listdir(index_dir)))
            count = min(len(buffer), 256 * 1024, 24 * MIB - self.sent)
            buffer[:count] = rng.randbytes(count)
            self.sent += count
            return count

    @contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield SlowStream()  # type: ignore[misc]

    item = BackupItem([b"dump.sql"], stream=opener, parents_on_disk=False)
    options = BackupOptions(
        pack_size=512 * 1024, compression_level=None, index_interval=0.05, index_every_packs=1000
    )
    result = Archiver(repo, options).backup_items([item], paths=["/dump.sql"])
    assert seen_mid_way and seen_mid_way[0] >= 1  # an index file existed before the end
    assert result.stats.bytes_added >= 24 * MIB
    assert Checker(_reopen(repo)).run(read_data=True).errors == []


def test_without_the_timer_nothing_is_indexed_mid_way(repo: Repository, tmp_path: Path) -> None:
    """The control for the test above: index_interval=None writes the index only at the end."""
    from safehold.fs.archiver import BackupItem

    index_dir = Path(repo.backend.location) / "index"
    mid_way: list[int] = []

    @contextmanager
    def opener() -> Iterator[BinaryIO]:
        class Stream:
            sent = 0

            def readinto(self, buffer: memoryview) -> int:
                if self.sent >= 16 * MIB and not mid_way:
                    sleep(0.3)
                    mid_way.append(len(os.listdir(index_dir)))
                if self.sent >= 24 * MIB:
                    return 0
                count = min(len(buffer), 256 * 1024)
                buffer[:count] = os.urandom(count)
                self.sent += count
                return count

        yield Stream()  # type: ignore[misc]

    options = BackupOptions(pack_size=512 * 1024, compression_level=None, index_interval=None)
    Archiver(repo, options).backup_items(
        [BackupItem([b"dump.sql"], stream=opener, parents_on_disk=False)], paths=["/dump.sql"]
    )
    assert mid_way == [0]
    assert len(os.listdir(index_dir)) == 1


# ----- reading the files -------------------------------------------------------------------


def test_a_backup_leaves_the_access_times_alone(repo: Repository, tmp_path: Path) -> None:
    """Files are read with O_NOATIME: under relatime a first read after a write would set
    the atime (and cost an inode write per file); the backup changes nothing on the source."""
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"small.txt": 5_000, "empty": 0, "chunked.bin": 3 * MIB}
    rng = random.Random(7)
    for name, size in sizes.items():
        (src / name).write_bytes(rng.randbytes(size))
        os.utime(src / name, ns=(1_000_000_000, 2_000_000_000))  # atime before mtime
    result = _backup(repo, [src])
    assert result.stats.errors == []
    for name in sizes:
        assert (src / name).stat().st_atime_ns == 1_000_000_000, name
    restored = _restored(_restore(repo, result, tmp_path / "out"), src)
    for name, size in sizes.items():
        assert (restored / name).read_bytes() == (src / name).read_bytes()
        assert len((restored / name).read_bytes()) == size


def test_a_file_that_refuses_o_noatime_is_read_plainly(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's file (EPERM for O_NOATIME) is still read, with a plain open."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "theirs.txt").write_bytes(b"not mine" * 1000)
    (src / "big.bin").write_bytes(random.Random(3).randbytes(2 * MIB))
    real_open = os.open
    refused: list[bytes] = []

    def open_without_noatime(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & getattr(os, "O_NOATIME", 0):
            refused.append(os.fsencode(path))
            raise PermissionError(1, "Operation not permitted")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_without_noatime)
    result = _backup(repo, [src])
    monkeypatch.setattr(os, "open", real_open)
    assert result.stats.errors == []
    assert len(refused) == (2 if hasattr(os, "O_NOATIME") else 0)
    restored = _restored(_restore(repo, result, tmp_path / "out"), src)
    assert (restored / "theirs.txt").read_bytes() == b"not mine" * 1000
    assert (restored / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
