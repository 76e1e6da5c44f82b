"""The restorer through its Python API: a file that fails to restore leaves nothing behind.

Every test runs twice: on the restore's threads (a small restore) and on its forked pack
workers (forced on from the first file, in jobs small enough that files share them)."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.fs import restorer as restorer_module
from safehold.fs.archiver import Archiver
from safehold.fs.restorer import RestoreOptions, Restorer
from safehold.repo.format import FileType, object_name
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository

PASSWORD = b"restorer tests"


@pytest.fixture(autouse=True, params=["threads", "processes"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which way the content is written; with "processes", a spy counts the worker pools."""
    started: list[int] = []
    if request.param == "processes":
        monkeypatch.setattr(restorer_module, "_FORK_AFTER_FILES", 0)
        monkeypatch.setattr(restorer_module, "_FORK_AFTER_BYTES", 0)
        monkeypatch.setattr(restorer_module, "_JOB_BYTES", 64 * 1024)  # files share jobs
        monkeypatch.setattr(restorer_module, "_STALE_FILES", 2)
        start = restorer_module._PackWorkers.start

        def spy(restorer: Restorer, workers: int) -> restorer_module._PackWorkers | None:
            started.append(workers)
            return start(restorer, workers)

        monkeypatch.setattr(restorer_module._PackWorkers, "start", staticmethod(spy))
    yield request.param
    if request.param == "processes":
        assert started, "the restore did not use its worker processes"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        LocalBackend(tmp_path / "repo"), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1)
    )


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([value[0] ^ 0x01]))


def _files(root: Path) -> dict[str, bytes]:
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


@pytest.mark.parametrize("damage", ["flipped", "missing"])
def test_a_file_that_fails_leaves_nothing_under_its_name(
    repo: Repository, tmp_path: Path, damage: str
) -> None:
    rng = random.Random(5)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    victim = rng.randbytes(200_000)
    (src / "sub" / "victim.bin").write_bytes(victim)
    os.link(src / "sub" / "victim.bin", src / "victim-link.bin")
    (src / "sub" / "fine.bin").write_bytes(rng.randbytes(150_000))
    (src / "small.txt").write_bytes(b"small\n")
    (src / "empty").write_bytes(b"")
    snapshot = Archiver(repo).backup([str(src)]).snapshot

    location = repo.index.lookup(hashlib.sha256(victim).hexdigest())
    assert location is not None
    pack = Path(repo.backend.location) / object_name(FileType.PACK, location.pack_id)
    if damage == "flipped":
        _flip(pack, location.blob.offset + location.blob.length // 2)
    else:
        os.unlink(pack)  # the pack is gone: every blob in it is missing
    opened = Repository.open(LocalBackend(repo.backend.location), PASSWORD)

    target = tmp_path / "target"
    stats = Restorer(opened, RestoreOptions(root=str(src))).restore(snapshot, str(target))
    failed = {Path(path).relative_to(target).as_posix() for path, _ in stats.errors}
    assert {"sub/victim.bin", "victim-link.bin"} <= failed
    assert not (target / "sub" / "victim.bin").exists()
    assert not (target / "victim-link.bin").exists()
    restored = _files(target)
    assert not [name for name in restored if ".safehold-restore-" in name]  # no temp file left
    expected = {rel: data for rel, data in _files(src).items() if rel not in failed}
    assert restored == expected  # everything else bit-exact
    assert "empty" in restored
    if damage == "flipped":  # one blob damaged: only the files using it fail
        assert failed == {"sub/victim.bin", "victim-link.bin"}
        assert set(restored) == {"empty", "small.txt", "sub/fine.bin"}


def test_restore_over_existing_files_with_force(repo: Repository, tmp_path: Path) -> None:
    """The rename replaces what the target held; nothing temporary remains."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"new content")
    snapshot = Archiver(repo).backup([str(src)]).snapshot
    target = tmp_path / "target"
    target.mkdir()
    (target / "a.txt").write_bytes(b"old, longer content than the new one")
    (target / "keep").write_bytes(b"keep")
    options = RestoreOptions(root=str(src), force=True)
    stats = Restorer(repo, options).restore(snapshot, str(target))
    assert stats.errors == []
    assert _files(target) == {"a.txt": b"new content", "keep": b"keep"}


FOREIGN = 4321


def test_owners_come_back_in_a_setgid_target_and_a_fresh_one(
    repo: Repository, tmp_path: Path
) -> None:
    """Runs as root, as the torture tests do. A file of the restoring user skips its chown
    only where a new file gets that owner by itself: in a setgid folder it would take the
    folder's group, so there it is chowned."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "mine").write_bytes(b"root's")
    (src / "theirs").write_bytes(b"someone else's")
    os.chown(src / "theirs", FOREIGN, FOREIGN)
    (src / "sub").mkdir()
    (src / "sub" / "deep").write_bytes(b"root's too")
    snapshot = Archiver(repo).backup([str(src)]).snapshot
    setgid = tmp_path / "setgid"
    setgid.mkdir()
    os.chown(setgid, 0, FOREIGN)
    os.chmod(setgid, 0o2775)
    for target in (tmp_path / "fresh", setgid):
        stats = Restorer(repo, RestoreOptions(root=str(src))).restore(snapshot, str(target))
        assert stats.errors == [] and stats.files == stats.files_total == 3
        owners = {name: (os.stat(target / name).st_uid, os.stat(target / name).st_gid)
                  for name in ("mine", "theirs", "sub/deep")}  # fmt: skip
        assert owners == {"mine": (0, 0), "theirs": (FOREIGN, FOREIGN), "sub/deep": (0, 0)}
        assert not [n for n in os.listdir(target) if n.startswith(".safehold-restore-")]


def _tree(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Every entry under root: kind, permission bits, mtime (ns) and content or target."""
    found: dict[str, tuple[str, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", 0, 0, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, b"")
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, path.read_bytes())
    return found


def _mixed_tree(src: Path) -> None:
    """Many small files over folders, files of several blobs (some across packs), a sparse
    file, duplicates, an empty file, hard links, a symlink, odd modes and times."""
    rng = random.Random(11)
    big = rng.randbytes(3 * 1024 * 1024)
    for number in range(40):
        folder = src / f"d{number % 7}" / f"e{number % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number}.txt").write_bytes(rng.randbytes(rng.randrange(1, 60_000)))
        times = (1_600_000_000_000_000_000 + number, 1_650_000_000_123_456_789 + number)
        os.utime(folder / f"f{number}.txt", ns=times)
    (src / "big.bin").write_bytes(big + rng.randbytes(2 * 1024 * 1024))
    (src / "d1" / "big-copy.bin").write_bytes(big + rng.randbytes(1024 * 1024))
    (src / "d2" / "dup.txt").write_bytes((src / "d0" / "e0" / "f0.txt").read_bytes())
    with open(src / "sparse.img", "wb") as handle:
        handle.write(b"head")  # then zeros: at least one blob of them (the chunker cuts
        handle.seek(20 * 1024 * 1024)  # them at its maximum size), restored as a hole
        handle.write(b"tail")
    (src / "empty").write_bytes(b"")
    (src / "mode600").write_bytes(b"secret")
    os.chmod(src / "mode600", 0o600)
    (src / "exec").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "exec", 0o755)
    os.link(src / "d1" / "big-copy.bin", src / "big-link.bin")
    os.symlink("d0/e0/f0.txt", src / "link")


def test_restore_is_byte_identical_with_its_metadata(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _mixed_tree(src)
    snapshot = Archiver(repo).backup([str(src)]).snapshot
    opened = Repository.open(LocalBackend(repo.backend.location), PASSWORD)
    target = tmp_path / "target"
    stats = Restorer(opened, RestoreOptions(root=str(src))).restore(snapshot, str(target))
    assert stats.errors == [] and stats.warnings == []
    assert stats.files == stats.files_total == 48
    assert stats.bytes_written <= stats.bytes_total
    assert _tree(target) == _tree(src)
    assert os.stat(target / "big-link.bin").st_ino == os.stat(target / "d1" / "big-copy.bin").st_ino
    assert os.stat(target / "sparse.img").st_blocks * 512 < 16 * 1024 * 1024  # still sparse
