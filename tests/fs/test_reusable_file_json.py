"""A re-backup refreshes an unchanged file's or folder's parent node instead of rebuilding it
(fs/metadata.py `reusable_file_json`, `reusable_dir_json`): the result must be exactly the
node a full rebuild writes, and anything that could differ must fall back to the rebuild."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from safehold.app.backup import BackupRequest, run_backup
from safehold.backends.local import LocalBackend
from safehold.fs.metadata import node_from_stat, reusable_dir_json, reusable_file_json
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository

OFFSET = 3600
CONTENT = ["ab" * 32]


def _fresh(path: Path) -> dict[str, Any]:
    """What a rebuild writes for the file now (with the parent's content)."""
    node = node_from_stat(os.fsencode(path.name), os.fsencode(path), os.lstat(path), OFFSET)
    assert node is not None
    value = node.to_json()
    value["content"] = list(CONTENT)
    return value


def _reused(previous: dict[str, Any], path: Path) -> dict[str, Any] | None:
    return reusable_file_json(previous, os.fsencode(path), os.lstat(path), OFFSET)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(n=1024, r=8, p=1))


@pytest.fixture
def file(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF" * 1000)
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    return path


def test_an_unchanged_file_gets_the_rebuilt_node_with_its_new_access_time(file: Path) -> None:
    previous = _fresh(file)
    file.read_bytes()  # a plain read moves the access time (relatime), not the ctime
    assert os.stat(file).st_atime_ns != os.stat(file).st_mtime_ns
    reused = _reused(previous, file)
    assert reused == _fresh(file)
    assert list(reused or {}) == list(_fresh(file))  # the same order: the same tree bytes
    assert reused is not None and reused["atime"] != previous["atime"]
    assert reused["content"] == CONTENT and reused["content"] is not previous["content"]


def test_an_empty_file_and_a_hard_link_are_refreshed_too(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    linked = tmp_path / "linked"
    linked.write_bytes(b"x")
    os.link(linked, tmp_path / "second")
    for path in (empty, linked):
        assert _reused(_fresh(path), path) == _fresh(path)


def test_a_change_the_stat_shows_falls_back_to_the_rebuild(file: Path) -> None:
    previous = _fresh(file)
    file.chmod(0o600)  # moves the ctime
    assert _reused(previous, file) is None
    previous = _fresh(file)
    with file.open("ab") as handle:
        handle.write(b"more")
    assert _reused(previous, file) is None
    previous = _fresh(file)
    os.link(file, file.with_name("link"))  # links and ctime
    assert _reused(previous, file) is None


def test_a_node_not_in_the_form_rebuilds_write_falls_back(file: Path) -> None:
    previous = _fresh(file)
    assert _reused(previous, file) is not None
    extra = {**previous, "generic_attributes": {}}  # a field a newer restic writes
    assert _reused(extra, file) is None
    reordered = {"type": previous["type"], **previous}  # another order: other tree bytes
    reordered = {key: reordered[key] for key in ["type", *[k for k in previous if k != "type"]]}
    assert _reused(reordered, file) is None
    assert _reused({**previous, "user": ""}, file) is None  # a rebuild would leave it out
    no_atime = {key: value for key, value in previous.items() if key != "atime"}
    assert _reused(no_atime, file) is None
    assert _reused({**previous, "type": "dir"}, file) is None
    assert _reused({**previous, "content": None}, file) is None


def test_extended_attributes_fall_back_to_the_rebuild(file: Path) -> None:
    previous = _fresh(file)
    try:
        os.setxattr(file, "user.origin", b"upload")
    except OSError:
        pytest.fail("the test folder's filesystem refuses user xattrs")
    previous = _fresh(file)
    assert previous["extended_attributes"]
    assert _reused(previous, file) is None


def test_a_re_backup_stores_the_same_trees_as_a_full_rebuild(
    tmp_path: Path, repo: Repository
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for index in range(20):
        (data / "sub" / f"f{index}").write_bytes(os.urandom(100 + index))
    (data / "tagged").write_bytes(b"t")
    os.setxattr(data / "tagged", "user.k", b"v")
    os.utime(data / "sub" / "f3", ns=(1_700_000_000_000_000_000,) * 2)
    first = run_backup(repo, BackupRequest([str(data)])).snapshot
    (data / "sub" / "f3").read_bytes()  # only its access time moves
    again = run_backup(repo, BackupRequest([str(data)]))
    assert again.stats.files_unmodified == 21 and again.stats.files_new == 0
    forced = BackupRequest([str(data)])
    forced.options.read_all = True  # every node rebuilt from the stat, every file read
    rebuilt = run_backup(repo, forced)
    assert again.snapshot.tree == rebuilt.snapshot.tree != first.tree


def _fresh_dir(path: Path) -> dict[str, Any]:
    node = node_from_stat(os.fsencode(path.name), os.fsencode(path), os.lstat(path), OFFSET)
    assert node is not None
    return node.to_json()


def _reused_dir(previous: dict[str, Any], path: Path) -> dict[str, Any] | None:
    return reusable_dir_json(previous, os.fsencode(path), os.lstat(path), OFFSET)


def test_an_unchanged_folder_gets_the_rebuilt_node_with_its_new_access_time(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside").write_text("x")
    os.utime(folder, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    stored = {**_fresh_dir(folder), "subtree": "ab" * 32}  # as the parent's tree holds it
    os.listdir(folder)  # moves the access time (relatime), not the ctime
    reused = _reused_dir(stored, folder)
    assert reused == _fresh_dir(folder) and list(reused or {}) == list(_fresh_dir(folder))
    assert reused is not None and reused["atime"] != stored["atime"] and "subtree" not in reused


def test_a_changed_or_unusual_folder_falls_back_to_the_rebuild(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    stored = {**_fresh_dir(folder), "subtree": "ab" * 32}
    assert _reused_dir(stored, folder) is not None
    assert _reused_dir({**stored, "generic_attributes": {}}, folder) is None
    assert _reused_dir({**stored, "type": "file"}, folder) is None
    assert _reused_dir({**stored, "content": []}, folder) is None
    assert _reused_dir({**stored, "user": ""}, folder) is None
    (folder / "new").write_text("x")  # mtime and ctime move
    assert _reused_dir(stored, folder) is None
    stored = {**_fresh_dir(folder), "subtree": "ab" * 32}
    folder.chmod(0o700)
    assert _reused_dir(stored, folder) is None
    stored = {**_fresh_dir(folder), "subtree": "ab" * 32}
    os.setxattr(folder, "user.k", b"v")
    assert _reused_dir(stored, folder) is None
