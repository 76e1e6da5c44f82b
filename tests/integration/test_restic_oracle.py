"""restic 0.14 as the oracle: what safehold writes, restic reads exactly, and the other way round.

Every restore is compared entry by entry with the source (type, mode bits, owner, size, mtime
in nanoseconds, link target bytes, content hash, hardlink groups, xattrs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from runners import PASSWORD, check_all, make_env, restic, safehold, snapshot_ids
from torture import (
    BAD_LINK_TARGET,
    SPARSE_SIZE,
    allocated_bytes,
    build_torture_tree,
    compare_trees,
    restored_root,
)

from safehold.backends.local import LocalBackend
from safehold.fs.archiver import Archiver, BackupOptions
from safehold.repo.repository import Repository


@pytest.fixture(scope="module")
def torture_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full torture tree, read-only for the tests of this module."""
    base = tmp_path_factory.mktemp("torture")
    build_torture_tree(base / "src")
    return base / "src"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return make_env(tmp_path / "restic-cache")


def test_compare_trees_sees_every_kind_of_difference(tmp_path: Path) -> None:
    """The comparison helper itself: a `cp -a` copy is equal, and each change is reported."""
    src = tmp_path / "a"
    build_torture_tree(src, big_files=False, bad_link_target=True)
    copy = tmp_path / "b"
    subprocess.run(["cp", "-a", src, copy], check=True)
    assert compare_trees(src, copy) == []

    os.chmod(copy / "modes" / "setuid", 0o755)
    os.lchown(copy / "owners" / "foreign-link", 0, 0)
    os.utime(copy / "links" / "loop-a", ns=(1, 2), follow_symlinks=False)
    os.utime(copy / "empty", ns=(1, 3))
    os.removexattr(copy / "xattrs" / "commented", "user.comment")
    with open(copy / "files" / "f4095", "r+b") as handle:
        handle.write(b"X")
    os.unlink(copy / "hard" / "h2")
    shutil.copy2(copy / "hard" / "h1", copy / "hard" / "h2")
    os.unlink(copy / "links" / "dangling")
    os.symlink(b"elsewhere", copy / "links" / "dangling")
    os.unlink(copy / "special" / "fifo")
    (copy / "special" / "fifo").write_bytes(b"")
    (copy / "extra").write_bytes(b"")
    os.unlink(copy / "files" / "one")

    report = "\n".join(compare_trees(src, copy))
    for expected in (
        "b'modes/setuid': mode 4755 != 0755",
        "b'owners/foreign-link': owner 12345:12345 != 0:0",
        "b'links/loop-a': mtime_ns",
        "b'empty': mtime_ns",
        "b'xattrs/commented': xattrs",
        "b'files/f4095': content differs",
        "hardlink groups differ",
        "b'links/dangling': link target b'does/not/exist' != b'elsewhere'",
        "b'special/fifo': type fifo != file",
        "b'extra': unexpected extra entry",
        "b'files/one': missing",
    ):
        assert expected in report, f"{expected!r} not reported in:\n{report}"


def test_safehold_backup_is_read_exactly_by_restic(
    torture_src: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    safehold(env, "-r", repo, "backup", torture_src)
    restic(env, "-r", repo, "check", "--read-data")

    by_restic = tmp_path / "restic-restore"
    restic(env, "-r", repo, "restore", "latest", "--target", by_restic)
    assert compare_trees(torture_src, restored_root(by_restic, torture_src)) == []

    by_safehold = tmp_path / "safehold-restore"
    safehold(env, "-r", repo, "restore", "latest", "--target", by_safehold)
    restored = restored_root(by_safehold, torture_src)
    assert compare_trees(torture_src, restored) == []
    # the 64 MiB sparse file comes back with holes, not 64 MiB of written zeros
    sparse = os.path.join(restored, b"files/sparse.img")
    assert allocated_bytes(sparse) < SPARSE_SIZE // 4


def test_small_files_read_on_processes_are_read_exactly_by_restic(
    torture_src: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """Every small file of the torture tree read, hashed and encrypted on reader processes
    (fs/smallfiles): restic checks every byte and restores the tree exactly, and the snapshot
    is the threaded path's, byte for byte (the same root tree id)."""
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    opened = Repository.open(LocalBackend(str(repo)), PASSWORD.encode())
    options = BackupOptions(file_processes=2, process_min_files=0)
    by_processes = Archiver(opened, options).backup([str(torture_src)])
    assert by_processes.stats.errors == []
    # the threaded backup before anything else reads the source: a read (compare_trees)
    # moves the access times the nodes record
    reopened = Repository.open(LocalBackend(str(repo)), PASSWORD.encode())
    by_threads = Archiver(reopened, BackupOptions(file_processes=0)).backup([str(torture_src)])
    assert by_threads.snapshot.tree == by_processes.snapshot.tree
    restic(env, "-r", repo, "check", "--read-data")
    by_restic = tmp_path / "restic-restore"
    restic(env, "-r", repo, "restore", by_processes.snapshot.id, "--target", by_restic)
    assert compare_trees(torture_src, restored_root(by_restic, torture_src)) == []


def test_restic_backup_is_read_exactly_by_safehold(
    torture_src: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "restic-repo"
    restic(env, "init", "--repository-version", "2", "-r", repo)
    restic(env, "-r", repo, "backup", torture_src)

    proc = safehold(env, "-r", repo, "check", "--read-data")
    assert "no errors were found" in proc.stdout
    assert "warning" not in proc.stderr

    target = tmp_path / "restore"
    safehold(env, "-r", repo, "restore", "latest", "--target", target)
    assert compare_trees(torture_src, restored_root(target, torture_src)) == []


def _layout(env: dict[str, str], repo: Path) -> list[str]:
    """The latest snapshot's entries as `restic ls` prints them, without the header."""
    return sorted(restic(env, "-r", repo, "ls", "latest").stdout.splitlines()[1:])


@pytest.mark.parametrize(
    ("cwd", "named"),
    [
        ("app", "."),
        ("app", "./sub"),
        ("", "app/sub"),
        ("app/sub", "../../other"),
        ("app", "../other"),
    ],
)
def test_relative_paths_are_stored_as_restic_stores_them(
    tmp_path: Path, env: dict[str, str], cwd: str, named: str
) -> None:
    """`backup .`, `backup ./sub`, `backup relative/dir`: both tools store the same layout
    from the same working folder, record the same absolute `paths`, and restore the same tree."""
    work = tmp_path / "work"
    (work / "app" / "sub" / "deep").mkdir(parents=True)
    (work / "other").mkdir()
    (work / "app" / "a.txt").write_bytes(b"a\n")
    (work / "app" / "sub" / "b.bin").write_bytes(os.urandom(5000))
    (work / "app" / "sub" / "deep" / "c").write_bytes(b"c")
    (work / "other" / "o.txt").write_bytes(b"o")
    folder = work / cwd
    safehold_repo, restic_repo = tmp_path / "safehold-repo", tmp_path / "restic-repo"
    safehold(env, "-r", safehold_repo, "init")
    restic(env, "init", "--repository-version", "2", "-r", restic_repo)
    safehold(env, "-r", safehold_repo, "backup", named, cwd=folder)
    restic(env, "-r", restic_repo, "backup", named, cwd=folder)

    ours = json.loads(restic(env, "-r", safehold_repo, "snapshots", "--json").stdout)[0]
    theirs = json.loads(restic(env, "-r", restic_repo, "snapshots", "--json").stdout)[0]
    assert ours["paths"] == theirs["paths"] == [os.path.normpath(folder / named)]
    layout = _layout(env, restic_repo)
    assert layout  # something was stored
    assert _layout(env, safehold_repo) == layout

    by_restic, by_safehold = tmp_path / "by-restic", tmp_path / "by-safehold"
    restic(env, "-r", restic_repo, "restore", "latest", "--target", by_restic)
    safehold(env, "-r", safehold_repo, "restore", "latest", "--target", by_safehold)
    made = os.stat(by_restic)  # the target folders themselves are not in the snapshots
    os.utime(by_safehold, ns=(made.st_atime_ns, made.st_mtime_ns))
    assert compare_trees(by_restic, by_safehold) == []

    # a second backup from the same place finds the first as parent and reads nothing again
    again = safehold(env, "-r", safehold_repo, "backup", named, "--json", cwd=folder)
    summary = json.loads(again.stdout)
    assert summary["files_new"] == summary["files_changed"] == summary["bytes_read"] == 0, summary


def test_invalid_utf8_link_target(tmp_path: Path, env: dict[str, str]) -> None:
    """safehold keeps a link target that is not UTF-8 byte-exact (linktarget_raw); restic 0.14
    reads the same snapshot with U+FFFD in place of the bad byte, a known restic limitation."""
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(BAD_LINK_TARGET, src / "bad-target")
    (src / "plain").write_bytes(b"plain\n")
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    safehold(env, "-r", repo, "backup", src)
    restic(env, "-r", repo, "check", "--read-data")

    safehold(env, "-r", repo, "restore", "latest", "--target", tmp_path / "by-safehold")
    assert compare_trees(src, restored_root(tmp_path / "by-safehold", src)) == []

    restic(env, "-r", repo, "restore", "latest", "--target", tmp_path / "by-restic")
    restored = restored_root(tmp_path / "by-restic", src)
    assert os.readlink(os.path.join(restored, b"bad-target")) == BAD_LINK_TARGET.replace(
        b"\xff", "\ufffd".encode()
    )
    assert (Path(os.fsdecode(restored)) / "plain").read_bytes() == b"plain\n"


def _mutate(src: Path, step: int) -> None:
    """A change of every kind: content (same size and different size), new, removed, mode."""
    text = src / "files" / "text-20m.log"
    with open(text, "ab") as handle:
        handle.write(b"appended in step %d\n" % step)
    with open(src / "files" / "f4095", "r+b") as handle:
        handle.write(b"%04d" % step)
    (src / "nested" / f"new-{step}.txt").write_bytes(os.urandom(200_000 + step))
    os.chmod(src / "modes" / "private", 0o640 if step % 2 else 0o600)
    victim = src / "names" / "tab\there"
    if victim.exists():
        victim.unlink()


def test_safehold_and_restic_alternate_in_one_repository(
    tmp_path: Path, env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    build_torture_tree(src)
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    safehold(env, "-r", repo, "backup", src)
    _mutate(src, 1)
    restic(env, "-r", repo, "backup", src)  # restic takes safehold's snapshot as its parent
    _mutate(src, 2)
    proc = safehold(env, "-r", repo, "backup", src, "--json")  # parent: restic's snapshot
    summary = json.loads(proc.stdout)
    assert summary["complete"] is True
    assert summary["files_unmodified"] >= 20  # restic's tree served as the parent
    first, from_restic, last = snapshot_ids(env, repo)
    listing = json.loads(safehold(env, "-r", repo, "snapshots", "--json").stdout)
    assert [snap["parent"] for snap in listing] == [None, first, from_restic]
    assert snapshot_ids(env, repo, "restic") == [first, from_restic, last]
    check_all(env, repo)

    for tool in ("safehold", "restic"):
        target = tmp_path / f"latest-{tool}"
        if tool == "safehold":
            safehold(env, "-r", repo, "restore", last, "--target", target)
        else:
            restic(env, "-r", repo, "restore", last, "--target", target)
        assert compare_trees(src, restored_root(target, src)) == [], tool

    # safehold's prune, checked by restic
    safehold(env, "-r", repo, "forget", first)
    proc = safehold(env, "-r", repo, "prune")
    assert "prune done" in proc.stdout
    check_all(env, repo)

    # restic's prune (it repacks what safehold wrote), checked by safehold
    restic(env, "-r", repo, "forget", from_restic)
    restic(env, "-r", repo, "prune", "--max-unused", "0")
    check_all(env, repo)
    assert snapshot_ids(env, repo) == [last]
    target = tmp_path / "after-restic-prune"
    safehold(env, "-r", repo, "restore", "latest", "--target", target)
    assert compare_trees(src, restored_root(target, src)) == []


def test_safehold_objects_survive_restic_prune(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    build_torture_tree(src, big_files=False)
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    safehold(env, "-r", repo, "backup", src)
    (src / "files" / "more").write_bytes(os.urandom(50_000))
    safehold(env, "-r", repo, "backup", src)

    opened = Repository.open(LocalBackend(repo), env["SAFEHOLD_PASSWORD"].encode())
    own_id = opened.save_record("drills", {"drill": "restored fine"})
    own_path = repo / "safehold" / "drills" / own_id
    assert own_path.is_file()
    before = own_path.read_bytes()

    def packs() -> set[str]:
        return {p.name for p in (repo / "data").rglob("*") if p.is_file()}

    packs_before = packs()
    restic(env, "-r", repo, "forget", snapshot_ids(env, repo)[0])
    restic(env, "-r", repo, "prune", "--max-unused", "0")
    assert packs_before - packs(), "restic prune had nothing to do: the test proves nothing"
    restic(env, "-r", repo, "check", "--read-data")

    assert own_path.read_bytes() == before
    reopened = Repository.open(LocalBackend(repo), env["SAFEHOLD_PASSWORD"].encode())
    assert reopened.load_record("drills", own_id) == {"drill": "restored fine"}
    check_all(env, repo)
    target = tmp_path / "restore"
    safehold(env, "-r", repo, "restore", "latest", "--target", target)
    assert compare_trees(src, restored_root(target, src)) == []
