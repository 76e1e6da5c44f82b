"""Small files backed up on reader processes (fs/smallfiles): the same snapshot as the
threaded path, byte for byte, whatever goes wrong on the way."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import safehold.fs.blobsaver as blobsaver
import safehold.fs.smallfiles as smallfiles
from safehold.backends.local import LocalBackend
from safehold.errors import BackupInterruptedError
from safehold.fs.archiver import Archiver, BackupOptions, BackupResult, _default_processes
from safehold.fs.metadata import node_from_stat
from safehold.fs.restorer import Restorer
from safehold.repo.check import Checker
from safehold.repo.format import encode_json
from safehold.repo.key import KdfParams
from safehold.repo.pack import BlobType
from safehold.repo.progress import Progress
from safehold.repo.repository import Repository
from safehold.repo.walk import walk_tree
from tests.fs.conftest import PASSWORD
from tests.fs.conftest import reopen as _reopen

MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
    reason="reader processes run on Linux with two or more cores",
)


def _processes(**options: object) -> BackupOptions:
    return BackupOptions(file_processes=2, process_min_files=0, **options)  # type: ignore[arg-type]


def _threads(**options: object) -> BackupOptions:
    return BackupOptions(file_processes=0, **options)  # type: ignore[arg-type]


def _backup(repo: Repository, src: Path, options: BackupOptions) -> BackupResult:
    return Archiver(repo, options).backup([str(src)])


def _make_uploads(root: Path, files: int = 300, seed: int = 5) -> None:
    """Small files over a few folders, with every kind of entry the readers hand back."""
    rng = random.Random(seed)
    for number in range(files):
        folder = root / f"{number % 7:02d}" / ("sub" if number % 3 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"u{number:04d}.bin").write_bytes(rng.randbytes(rng.randint(0, 50_000)))
    (root / "00" / "empty").write_bytes(b"")
    (root / "00" / "same-a").write_bytes(b"duplicate content\n" * 100)
    (root / "00" / "same-b").write_bytes(b"duplicate content\n" * 100)
    (root / "01" / "big.bin").write_bytes(rng.randbytes(3 * MIB))  # chunked: threads
    (root / "01" / "exactly-512k").write_bytes(rng.randbytes(512 * 1024))  # still one blob
    (root / "01" / "target.bin").write_bytes(b"linked\n")
    os.link(root / "01" / "target.bin", root / "01" / "hardlink")  # read once per inode
    os.symlink("target.bin", root / "01" / "link")
    os.mkfifo(root / "02" / "fifo")
    odd = os.path.join(os.fsencode(root / "03"), b'n\xffme "quoted" \\ \xc3\xa9\n')
    with open(odd, "wb") as handle:
        handle.write(b"odd name")
    (root / "04" / "xattr.txt").write_bytes(b"with an xattr")
    os.setxattr(root / "04" / "xattr.txt", "user.comment", b"kept")
    (root / "05" / "old.txt").write_bytes(b"old")
    os.utime(root / "05" / "old.txt", ns=(1_000_000_123, 2_000_000_456))


def _nodes(repo: Repository, tree_id: str, prefix: str = "") -> list[tuple[str, object]]:
    """Every node of a snapshot tree, recursively, as its JSON text without atime and subtree
    (the first backup's listing sets the folders' atimes: the second sees others)."""
    out: list[tuple[str, object]] = []
    for node in json.loads(repo.load_blob(tree_id, BlobType.TREE))["nodes"]:
        subtree = node.pop("subtree", None)
        node.pop("atime", None)
        out.append((prefix + node["name"], json.dumps(node)))
        if subtree:
            out.extend(_nodes(repo, subtree, prefix + node["name"] + "/"))
    return out


def _same_snapshot(repo: Repository, first: BackupResult, second: BackupResult) -> None:
    """The same nodes below the backed-up folder (the folders above it, /tmp among them,
    change while the tests run)."""
    fresh = _reopen(repo)
    (src,) = first.snapshot.paths
    below = src.lstrip("/") + "/"
    one, two = (
        [
            (path, node)
            for path, node in _nodes(fresh, result.snapshot.tree)
            if path.startswith(below)
        ]
        for result in (first, second)
    )
    assert len(one) == len(two) > 0
    assert one == two


def _digest(root: Path) -> dict[bytes, tuple[object, ...]]:
    out: dict[bytes, tuple[object, ...]] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                what: object = os.readlink(path)
            elif os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    what = handle.read()
            else:
                what = None
            out[os.path.relpath(path, base)] = (st.st_mode, st.st_mtime_ns, what)
    return out


def test_the_snapshot_is_the_threaded_paths_byte_for_byte(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "uploads"
    _make_uploads(src)
    by_processes = _backup(repo, src, _processes())
    by_threads = _backup(_reopen(repo), src, _threads())
    assert by_processes.stats.errors == []
    # the same trees (node JSON, order, content ids), but for the folders' atimes
    _same_snapshot(repo, by_processes, by_threads)
    assert by_threads.stats.data_blobs_new == 0  # the same blobs
    counts = by_processes.stats
    assert (counts.files_new, counts.bytes_total) == (
        by_threads.stats.files_new,
        by_threads.stats.bytes_total,
    )
    assert counts.bytes_read == by_threads.stats.bytes_read
    fresh = _reopen(repo)
    assert Checker(fresh).run(read_data=True).errors == []
    target = tmp_path / "out"
    assert Restorer(fresh).restore(by_processes.snapshot, str(target)).errors == []
    restored = target / str(src).lstrip("/")
    assert _digest(restored) == _digest(src)
    assert os.getxattr(restored / "04" / "xattr.txt", "user.comment") == b"kept"
    linked = os.stat(restored / "01" / "target.bin")
    assert os.stat(restored / "01" / "hardlink").st_ino == linked.st_ino


def _data_blobs(repo: Repository) -> list[str]:
    """The data blobs of the index, one entry per stored copy (trees differ by the folders'
    access times between backups)."""
    return [b.id for blobs in repo.index.packs.values() for b in blobs if b.type is BlobType.DATA]


def test_blobs_the_repository_has_are_cut_out_of_the_slot(repo: Repository, tmp_path: Path) -> None:
    """Every other file already stored (by an earlier backup of copies of them): the reader
    processes encode them again, and only the runs of new blobs between them are packed,
    each blob once: what the threaded path stores in a repository made the same way."""
    src, known = tmp_path / "uploads", tmp_path / "known"
    _make_uploads(src, files=200)
    (src / "01" / "big.bin").unlink()  # chunked by each repository's own chunker seed
    known.mkdir()
    for number in range(0, 200, 2):
        original = next(src.rglob(f"u{number:04d}.bin"))
        (known / original.name).write_bytes(original.read_bytes())
    by_threads_repo = Repository.init(
        LocalBackend(tmp_path / "repo-threads"), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1)
    )
    for target, options in ((repo, _processes()), (by_threads_repo, _threads())):
        _backup(target, known, _threads())
        result = _backup(_reopen(target), src, options)
        assert result.stats.errors == []
    processes_new, threads_new = (
        _backup(_reopen(r), src, _threads()) for r in (repo, by_threads_repo)
    )
    assert processes_new.stats.data_blobs_new == threads_new.stats.data_blobs_new == 0
    fresh = _reopen(repo)
    entries = _data_blobs(fresh)
    assert len(entries) == len(set(entries))
    assert sorted(entries) == sorted(_data_blobs(_reopen(by_threads_repo)))
    assert Checker(fresh).run(read_data=True).errors == []


def test_trees_encoded_a_batch_at_a_time_are_the_threaded_paths(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With reader processes the walk holds new trees and encrypts a few at once
    (BlobSaver.save_batched): the same trees, every one stored once and readable."""
    monkeypatch.setattr(blobsaver, "HELD_BLOBS", 3)
    src = tmp_path / "uploads"
    _make_uploads(src, files=150)
    for number in range(10):
        (src / f"deep{number}" / "a" / "b").mkdir(parents=True)
    result = _backup(repo, src, _processes())
    fresh = _reopen(repo)
    trees = [b.id for blobs in fresh.index.packs.values() for b in blobs if b.type is BlobType.TREE]
    assert len(trees) == len(set(trees)) == result.stats.tree_blobs_new  # the deep* ones alike
    assert len(trees) > 3 * 3
    _same_snapshot(repo, result, _backup(_reopen(repo), src, _threads()))
    assert Checker(fresh).run(read_data=True).errors == []


def test_the_processes_start_from_the_nth_small_file(repo: Repository, tmp_path: Path) -> None:
    """Below `process_min_files` small files the threads read them (a tiny backup is not
    worth the hand-off); past it the processes take the rest: still the same snapshot."""
    src = tmp_path / "uploads"
    _make_uploads(src, files=120)
    mixed = Archiver(repo, BackupOptions(file_processes=2, process_min_files=50)).backup([str(src)])
    _same_snapshot(repo, mixed, _backup(_reopen(repo), src, _threads()))


def test_a_batch_past_its_byte_budget_is_read_in_more_batches(
    repo: Repository, tmp_path: Path
) -> None:
    """Files of up to 512 KiB: a batch reads at most BATCH_BYTES, the rest go in later ones."""
    src = tmp_path / "photos"
    src.mkdir()
    rng = random.Random(9)
    for number in range(40):
        (src / f"p{number:02d}.jpg").write_bytes(rng.randbytes(rng.randint(200_000, 512 * 1024)))
    result = _backup(repo, src, _processes())
    assert result.stats.errors == []
    assert result.stats.files_new == 40
    _same_snapshot(repo, result, _backup(_reopen(repo), src, _threads()))


def _refuse_some(path: bytes) -> int:
    if b"u001" in path:
        raise PermissionError(13, "Permission denied")
    return os.open(path, os.O_RDONLY)


def test_an_unreadable_file_is_an_error_and_the_rest_is_kept(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "uploads"
    _make_uploads(src, files=100)
    monkeypatch.setattr(smallfiles, "open_for_reading", _refuse_some)  # inherited by the fork
    result = _backup(repo, src, _processes())
    failed = sorted(os.path.basename(path) for path, _ in result.stats.errors)
    assert failed == [f"u{n:04d}.bin" for n in range(10, 20)]
    assert {message for _, message in result.stats.errors} == {"Permission denied"}
    assert result.snapshot.complete is False
    names = {path for path, _ in walk_tree(repo, result.snapshot.tree)}
    assert any(name.endswith("/u0009.bin") for name in names)
    assert not any(name.endswith("/u0010.bin") for name in names)
    assert Checker(_reopen(repo)).run(read_data=True).errors == []


_read_batch = smallfiles.read_batch


def _die_on_u0042(items: list[tuple[bytes, bytes]], slot: int) -> smallfiles.BatchResult:
    if any(name == b"u0042.bin" for _, name in items):
        os._exit(3)  # a reader killed (out of memory, say) with a batch in hand
    return _read_batch(items, slot)


def test_a_dead_reader_process_leaves_the_files_to_the_threads(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "uploads"
    _make_uploads(src, files=200)
    monkeypatch.setattr(smallfiles, "read_batch", _die_on_u0042)
    result = _backup(repo, src, _processes())
    assert result.stats.errors == []
    monkeypatch.undo()
    _same_snapshot(repo, result, _backup(_reopen(repo), src, _threads()))
    assert Checker(_reopen(repo)).run(read_data=True).errors == []


def test_ctrl_c_keeps_the_packed_small_files_for_the_next_backup(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "uploads"
    src.mkdir()
    rng = random.Random(4)
    for folder in range(20):
        (src / f"d{folder:02d}").mkdir()
        for number in range(40):
            (src / f"d{folder:02d}" / f"f{number:02d}").write_bytes(rng.randbytes(20_000))
    total = 20 * 40 * 20_000

    interrupted: list[int] = []

    def interrupt(report: Progress) -> None:
        if report.files >= 300 and not interrupted:
            interrupted.append(report.files)
            raise KeyboardInterrupt  # on the walk: where the CLI's signal lands

    options = _processes(pack_size=512 * 1024, compression_level=None, index_interval=None)
    archiver = Archiver(repo, options, interrupt)
    archiver.options.scan = False
    with pytest.raises(BackupInterruptedError) as caught:
        archiver.backup([str(src)])
    fresh = _reopen(repo)
    assert fresh.list_snapshots() == []
    kept = caught.value.kept_bytes
    assert 300 * 20_000 <= kept < total
    stored = {p.name for p in (Path(repo.backend.location) / "data").rglob("*") if p.is_file()}
    assert stored == set(fresh.index.packs)  # every stored pack is indexed
    assert Checker(fresh).run(read_data=True).errors == []
    again = _backup(fresh, src, _processes())
    assert again.stats.errors == []
    assert total - kept <= again.stats.bytes_added <= total - kept + 300_000  # + 21 trees


_KILLED = textwrap.dedent(
    """
    import os, signal, sys, multiprocessing
    from safehold.backends.local import LocalBackend
    from safehold.fs.archiver import Archiver, BackupOptions
    from safehold.repo.repository import Repository

    repo = Repository.open(LocalBackend(sys.argv[1]), sys.argv[3].encode())
    def progress(report):
        if report.files >= 100:
            print(*[p.pid for p in multiprocessing.active_children()], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    options = BackupOptions(file_processes=2, process_min_files=0, scan=False)
    Archiver(repo, options, progress).backup([sys.argv[2]])
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_backup_killed_9_leaves_no_reader_behind_and_a_valid_repository(
    repo: Repository, tmp_path: Path
) -> None:
    src = tmp_path / "uploads"
    _make_uploads(src, files=400)
    child = subprocess.run(
        [sys.executable, "-c", _KILLED, repo.backend.location, str(src), PASSWORD.decode()],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    workers = [int(word) for word in child.stdout.split()]
    assert len(workers) >= 2, child.stdout
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)], "orphaned reader processes live on"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    fresh = _reopen(repo)
    fresh.remove_stale_locks()
    assert fresh.list_snapshots() == []
    assert Checker(fresh).run(read_data=True).errors == []
    result = _backup(fresh, src, _processes())
    assert result.stats.errors == []
    assert Checker(_reopen(repo)).run(read_data=True).errors == []


@pytest.mark.parametrize(
    "name",
    [b"plain.txt", b'say "hi"', b"back\\slash", b"\xc3\xa9t\xc3\xa9", b"bad-\xff", b"tab\there",
     b"\xe2\x80\xa8line-sep", b"del\x7f"],
)  # fmt: skip
@pytest.mark.parametrize("size", [0, 3])
def test_a_file_node_is_the_json_the_node_writes(tmp_path: Path, name: bytes, size: int) -> None:
    """The readers' direct JSON is encode_json(Node.to_json()) to the byte."""
    path = os.path.join(os.fsencode(tmp_path), name)
    with open(path, "wb") as handle:
        handle.write(b"abc"[:size])
    os.chmod(path, 0o4751 if size else 0)
    os.utime(path, ns=(5_000_000_001, 7_000_000_000))
    os.chown(path, 54_321, 0)  # a uid without a user name
    st = os.lstat(path)
    node = node_from_stat(name, path, st, 3600)
    assert node is not None
    blob_id = "ab" * 32 if size else ""
    node.content = [blob_id] if size else []
    assert smallfiles.file_node_json(name, st, 3600, blob_id) == encode_json(node.to_json())


@pytest.mark.parametrize(
    ("actual", "stat_size", "expected"),
    [
        (0, 0, 0),
        (1000, 1000, 1000),
        (1000, 10, 1000),  # grew since the lstat: read to the end
        (1000, 5000, 1000),  # shrank
        (smallfiles.SMALL_FILE + 5000, 100, smallfiles.SMALL_FILE + 1),  # grew past one blob
        (smallfiles.SMALL_FILE + 1, smallfiles.SMALL_FILE, smallfiles.SMALL_FILE + 1),
    ],
)
def test_a_small_file_is_read_by_its_size_and_to_its_end(
    tmp_path: Path, actual: int, stat_size: int, expected: int
) -> None:
    path = tmp_path / "f"
    content = random.Random(actual).randbytes(actual)
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert smallfiles.read_small(fd, stat_size) == content[:expected]
    finally:
        os.close(fd)


def test_one_more_reader_than_cores_up_to_four_and_none_on_one_core() -> None:
    assert [_default_processes(cores) for cores in (1, 2, 3, 4, 16)] == [0, 3, 4, 4, 4]
    assert _default_processes() in (0, 3, 4)
