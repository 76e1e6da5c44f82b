"""One conformance suite for every backend (params in conftest.BACKEND_FACTORIES), then the
LocalBackend's own guarantees: atomic writes, temp files, restic's layout, error mapping."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehold.backends.base import Backend, Capabilities, FileInfo, ObjectNotFoundError
from safehold.backends.local import LocalBackend
from safehold.errors import BackendError, BackendPermissionError, RepositoryExistsError

PACK_A = "00" + "a1" * 31
PACK_B = "ab" + "b2" * 31
PACK_C = "ff" + "c3" * 31
KEY = "d4" * 32
SNAPSHOT = "e5" * 32
INDEX = "f6" * 32

OBJECTS = {
    "config": b"config bytes",
    f"keys/{KEY}": b"key",
    f"snapshots/{SNAPSHOT}": b"snapshot!",
    f"index/{INDEX}": b"index bytes.",
    f"data/00/{PACK_A}": b"a" * 10,
    f"data/ab/{PACK_B}": b"b" * 200,
    f"data/ff/{PACK_C}": b"c" * 3,
    "safehold/drills/2026-11-22T18-30.json": b"{}",
    "safehold/runbook.md": b"# restore",
}


def _names(infos: Iterator[FileInfo]) -> list[str]:
    return sorted(info.name for info in infos)


@pytest.fixture
def filled(backend: Backend) -> Backend:
    for name, data in OBJECTS.items():
        backend.put(name, data)
    return backend


# ----- conformance ------------------------------------------------------------------------


def test_implements_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.location, str) and backend.location


def test_declares_its_capabilities_consistently(backend: Backend) -> None:
    """One frozen Capabilities, the same on every read, and true to what the backend does."""
    capabilities = backend.capabilities
    assert isinstance(capabilities, Capabilities)
    assert backend.capabilities == capabilities
    with pytest.raises(dataclasses.FrozenInstanceError):
        capabilities.object_lock = True  # type: ignore[misc]
    backend.put(f"keys/{KEY}", b"hello")
    if capabilities.local_path is not None:
        stored = capabilities.local_path / "keys" / KEY
        assert stored.read_bytes() == b"hello"  # the objects really are files there
    else:
        assert not os.path.isfile(os.path.join(backend.location, "keys", KEY))
    removed = backend.cleanup_temp_files()
    assert isinstance(removed, int) and removed >= 0
    if not capabilities.cleans_temp_files:
        assert removed == 0
    assert backend.get(f"keys/{KEY}") == b"hello"  # cleaning never touches an object
    assert capabilities.object_lock is False  # the suite's backends write without retention


def test_put_then_get(backend: Backend) -> None:
    backend.put(f"keys/{KEY}", b"hello")
    assert backend.get(f"keys/{KEY}") == b"hello"
    assert backend.stat(f"keys/{KEY}") == FileInfo(f"keys/{KEY}", 5)


def test_missing_objects(backend: Backend) -> None:
    for name in ("config", f"keys/{KEY}", f"data/ab/{PACK_B}", "never/heard/of"):
        with pytest.raises(ObjectNotFoundError):
            backend.get(name)
        with pytest.raises(ObjectNotFoundError):
            backend.stat(name)
        with pytest.raises(ObjectNotFoundError):
            backend.get_range(name, 0, 10)


def test_missing_object_error_is_a_backend_error(backend: Backend) -> None:
    with pytest.raises(BackendError) as caught:
        backend.get("config")
    assert "config" in str(caught.value)


def test_get_range(backend: Backend) -> None:
    data = bytes(range(256)) * 4
    name = f"data/ab/{PACK_B}"
    backend.put(name, data)
    assert backend.get_range(name, 0, 16) == data[:16]
    assert backend.get_range(name, 500, 100) == data[500:600]
    assert backend.get_range(name, 1000, 100) == data[1000:]  # runs past the end
    assert backend.get_range(name, 1024, 10) == b""  # starts at the end
    assert backend.get_range(name, 5000, 10) == b""  # starts past the end
    assert backend.get_range(name, 7, 0) == b""
    assert backend.get_range(name, 0, len(data)) == data
    with pytest.raises(ValueError):
        backend.get_range(name, -1, 10)
    with pytest.raises(ValueError):
        backend.get_range(name, 0, -1)


def test_list_with_prefix(filled: Backend) -> None:
    assert _names(filled.list("data/")) == [
        f"data/00/{PACK_A}", f"data/ab/{PACK_B}", f"data/ff/{PACK_C}",
    ]  # fmt: skip
    assert _names(filled.list("data/ab/")) == [f"data/ab/{PACK_B}"]
    assert _names(filled.list("keys/")) == [f"keys/{KEY}"]
    assert _names(filled.list("snapshots/")) == [f"snapshots/{SNAPSHOT}"]
    assert _names(filled.list("locks/")) == []
    assert _names(filled.list("nothing-here/")) == []
    assert _names(filled.list("")) == sorted(OBJECTS)
    sizes = {info.name: info.size for info in filled.list("")}
    assert sizes == {name: len(data) for name, data in OBJECTS.items()}


def test_list_is_by_prefix_not_by_folder(filled: Backend) -> None:
    assert _names(filled.list("data/a")) == [f"data/ab/{PACK_B}"]
    assert _names(filled.list(f"keys/{KEY[:6]}")) == [f"keys/{KEY}"]
    assert _names(filled.list("keys/zz")) == []
    assert _names(filled.list("conf")) == ["config"]


def test_list_of_a_restic_folder_is_in_order(filled: Backend) -> None:
    # Each restic folder holds only files or only sub-folders; such listings come sorted.
    for prefix in ("data/", "keys/", "safehold/drills/"):
        names = [info.name for info in filled.list(prefix)]
        assert names == sorted(names)


def test_names_under_safehold_prefix(filled: Backend) -> None:
    assert _names(filled.list("safehold/")) == [
        "safehold/drills/2026-11-22T18-30.json", "safehold/runbook.md",
    ]  # fmt: skip
    assert filled.get("safehold/runbook.md") == b"# restore"
    assert _names(filled.list("snapshots/")) == [f"snapshots/{SNAPSHOT}"]


def test_delete_is_idempotent(filled: Backend) -> None:
    name = f"data/ab/{PACK_B}"
    filled.delete(name)
    filled.delete(name)
    filled.delete("keys/never-existed")
    with pytest.raises(ObjectNotFoundError):
        filled.get(name)
    assert name not in _names(filled.list(""))
    assert _names(filled.list("data/")) == [f"data/00/{PACK_A}", f"data/ff/{PACK_C}"]


def test_exists_and_create(fresh_backend: Backend) -> None:
    assert not fresh_backend.exists()
    fresh_backend.create()
    assert fresh_backend.exists()
    assert _names(fresh_backend.list("")) == []
    fresh_backend.put("config", b"x")
    with pytest.raises(RepositoryExistsError):
        fresh_backend.create()
    assert fresh_backend.get("config") == b"x"


@pytest.mark.parametrize("size", [0, 1, 15, 4096, 65_537, 5 * 1024 * 1024])
def test_binary_data_of_many_sizes(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    name = f"data/{PACK_B[:2]}/{PACK_B}"
    backend.put(name, data)
    assert backend.get(name) == data
    assert backend.stat(name).size == size
    assert backend.get_range(name, max(0, size - 7), 7) == data[-7:]
    assert [info.size for info in backend.list("data/")] == [size]


def test_bytes_like_input_is_stored_as_given(backend: Backend) -> None:
    backend.put(f"keys/{KEY}", bytearray(b"\x00\xffmutable"))
    assert backend.get(f"keys/{KEY}") == b"\x00\xffmutable"


def test_concurrent_puts(backend: Backend) -> None:
    names = [f"data/{index:02x}/{index:02x}" + "0" * 62 for index in range(32)]

    def put(name: str) -> None:
        backend.put(name, name.encode())

    threads = [threading.Thread(target=put, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _names(backend.list("data/")) == sorted(names)
    assert all(backend.get(name) == name.encode() for name in names)


# ----- LocalBackend only ------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path / "repo")
    backend.create()
    return backend


def _temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def test_local_layout_matches_restic(local: LocalBackend) -> None:
    root = local.root
    assert sorted(path.name for path in root.iterdir()) == [
        "data", "index", "keys", "locks", "snapshots",
    ]  # fmt: skip
    assert sorted(path.name for path in (root / "data").iterdir()) == [
        f"{number:02x}" for number in range(256)
    ]
    assert stat.S_IMODE(os.stat(root / "data" / "7f").st_mode) == 0o700
    local.put(f"data/ab/{PACK_B}", b"pack")
    local.put("config", b"c")
    local.put(f"snapshots/{SNAPSHOT}", b"s")
    assert (root / "data" / "ab" / PACK_B).read_bytes() == b"pack"
    assert (root / "config").read_bytes() == b"c"
    assert (root / "snapshots" / SNAPSHOT).read_bytes() == b"s"
    assert stat.S_IMODE(os.stat(root / "config").st_mode) == 0o600


def test_local_reads_objects_written_by_others(local: LocalBackend) -> None:
    """A repository written by restic is just files: safehold reads them where restic puts them."""
    (local.root / "keys" / KEY).write_bytes(b"restic key")
    (local.root / "data" / "00" / PACK_A).write_bytes(b"restic pack")
    assert local.get(f"keys/{KEY}") == b"restic key"
    assert _names(local.list("data/")) == [f"data/00/{PACK_A}"]


def test_local_put_is_atomic_and_leaves_no_temp_file(local: LocalBackend) -> None:
    for name, data in OBJECTS.items():
        local.put(name, data)
    assert _temp_files(local.root) == []
    # safehold/ and its sub-folders are created on demand
    assert (local.root / "safehold" / "drills").is_dir()


def test_local_failed_put_cleans_up(local: LocalBackend) -> None:
    (local.root / "keys" / KEY).mkdir()  # the rename onto a folder must fail
    with pytest.raises(BackendError):
        local.put(f"keys/{KEY}", b"data")
    assert _temp_files(local.root) == []


def test_local_declares_its_folder_and_its_temp_file_cleanup(local: LocalBackend) -> None:
    assert local.capabilities == Capabilities(
        local_path=local.root, cleans_temp_files=True, forkable=True
    )


def test_local_temp_files_are_invisible_and_cleaned(local: LocalBackend) -> None:
    local.put(f"keys/{KEY}", b"real")
    leftover = local.root / "data" / "ab" / f".tmp-{PACK_B}-0123abcd"
    leftover.write_bytes(b"half a pack")
    (local.root / "keys" / ".tmp-interrupted").write_bytes(b"")
    assert _names(local.list("")) == [f"keys/{KEY}"]
    assert _names(local.list("data/")) == []
    assert local.cleanup_temp_files() == 2
    assert not leftover.exists()
    assert local.get(f"keys/{KEY}") == b"real"
    assert local.cleanup_temp_files() == 0


def test_local_create_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "somebody-elses-file").write_text("keep me")
    with pytest.raises(RepositoryExistsError):
        LocalBackend(tmp_path).create()
    assert (tmp_path / "somebody-elses-file").read_text() == "keep me"
    assert not (tmp_path / "data").exists()


def test_local_create_makes_missing_parents(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "a" / "b" / "repo")
    assert not backend.exists()
    backend.create()
    assert (tmp_path / "a" / "b" / "repo" / "data" / "ff").is_dir()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "data/../../escape", "keys/.."])
def test_local_rejects_names_outside_the_repository(local: LocalBackend, name: str) -> None:
    with pytest.raises(ValueError):
        local.put(name, b"x")
    with pytest.raises(ValueError):
        local.get(name)
    assert not (local.root.parent / "escape").exists()


def test_local_path_under_a_regular_file_is_a_backend_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    backend = LocalBackend(blocker / "repo")
    assert not backend.exists()
    with pytest.raises(BackendError):
        backend.create()
    with pytest.raises(BackendError):
        backend.put(f"keys/{KEY}", b"x")
    with pytest.raises(BackendError):
        backend.get(f"keys/{KEY}")
    with pytest.raises(BackendError):
        backend.stat(f"keys/{KEY}")
    assert _names(backend.list("")) == []
    assert blocker.read_bytes() == b"not a folder"


NOBODY = 65534


def _as_unprivileged_user(action: Callable[[], str]) -> str:
    """Run `action` where file permissions apply: directly, or as root in a forked child
    that drops to uid/gid 65534 (root bypasses permission bits, so chmod alone proves nothing)."""
    if os.geteuid() != 0:
        return action()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError:
                result = "cannot-drop-privileges"
            else:
                result = action()
            os.write(write_end, result.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    if result == "cannot-drop-privileges":
        pytest.skip("running as root without the right to switch to an unprivileged user")
    return result


@pytest.fixture
def read_only_repo() -> Iterator[Path]:
    # Outside tmp_path: pytest's base temp folder is private to its owner, and the
    # unprivileged child must be able to reach the repository to hit the permission check.
    base = Path(tempfile.mkdtemp(prefix="safehold-ro-"))
    try:
        os.chmod(base, 0o755)
        backend = LocalBackend(base / "repo")
        backend.create()
        backend.put(f"keys/{KEY}", b"readable")
        for folder in (base / "repo", base / "repo" / "keys"):
            os.chmod(folder, 0o555)
        os.chmod(base / "repo" / "keys" / KEY, 0o444)
        yield base / "repo"
    finally:
        for path in (base / "repo", base / "repo" / "keys"):
            if path.exists():
                os.chmod(path, 0o755)
        shutil.rmtree(base)


def test_local_read_only_folder_is_a_permission_error(read_only_repo: Path) -> None:
    def attempt() -> str:
        backend = LocalBackend(read_only_repo)
        outcome = [backend.get(f"keys/{KEY}").decode()]  # reading still works
        try:
            backend.put(f"keys/{'0' * 64}", b"new key")
        except BackendPermissionError as err:
            outcome.append(f"permission:{err.hint != ''}")
        except BaseException as err:
            outcome.append(f"wrong:{type(err).__name__}:{err}")
        else:
            outcome.append("written")
        return " ".join(outcome)

    assert _as_unprivileged_user(attempt) == "readable permission:True"
    assert _temp_files(read_only_repo) == []
    assert sorted(path.name for path in (read_only_repo / "keys").iterdir()) == [KEY]


def test_a_forked_child_reads_through_its_own_copy_after_fork(backend: Backend) -> None:
    """Every backend works in a child forked with it in memory once after_fork() has run
    (the child connects anew where it must: SFTP), and the parent's own connection still
    works afterwards. `forkable` only says whether a restore's workers choose to."""
    backend.put("data/ab/" + "ab" * 32, b"parent wrote this")
    backend.get("data/ab/" + "ab" * 32)  # the parent has a connection open at the fork
    _forked["backend"] = backend  # the child's copy comes with the fork, never pickled
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply(_read_after_fork, ("data/ab/" + "ab" * 32,))
    finally:
        _forked.clear()
    assert got == b"parent wrote this"
    assert backend.get("data/ab/" + "ab" * 32) == b"parent wrote this"


_forked: dict[str, Backend] = {}


def _read_after_fork(name: str) -> bytes:
    backend = _forked["backend"]
    backend.after_fork()
    return backend.get(name)
