"""A repository in a local directory, laid out exactly as restic's local backend lays it out.

Every write is atomic and durable: write a temp file in the target directory, fsync it, rename
it into place, fsync the directory. A crash leaves at most a `.tmp-*` file, which listing skips.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from safehold.backends.base import Capabilities, FileInfo, ObjectData, ObjectNotFoundError
from safehold.errors import BackendError, BackendPermissionError, DiskFullError

_TOP_DIRS = ("data", "index", "keys", "locks", "snapshots")
_TMP_PREFIX = ".tmp-"


def _translate(err: OSError, what: str) -> BackendError:
    if err.errno == errno.ENOSPC or err.errno == errno.EDQUOT:
        return DiskFullError(f"disk full while writing {what}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BackendPermissionError(f"permission denied on {what}: {err.strerror}")
    return BackendError(f"I/O error on {what}: {err.strerror}", hint="check the disk and retry")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_text = str(self.root)

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(local_path=self.root, cleans_temp_files=True, forkable=True)

    def after_fork(self) -> None:
        """Nothing is shared: every call opens its own file."""

    def _checked(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"invalid object name {name!r}")
        return name

    def _path(self, name: str) -> Path:
        return self.root / self._checked(name)

    def put(self, name: str, data: ObjectData) -> None:
        path = self._path(name)
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(4)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                parts = [data] if isinstance(data, bytes | bytearray | memoryview) else data
                for part in parts:
                    view = memoryview(part)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except OSError as err:
            with contextlib.suppress(OSError):  # e.g. ENOTDIR/EROFS: report the first error
                tmp.unlink(missing_ok=True)
            raise _translate(err, f"{name} in {self.location}") from None

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{name} not found in {self.location}") from None
        except OSError as err:
            raise _translate(err, f"{name} in {self.location}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        try:  # os.pread on a plain path: a restore or a walk over parent trees does thousands
            fd = os.open(os.path.join(self._root_text, self._checked(name)), os.O_RDONLY)
            try:
                data = os.pread(fd, length, offset)
                while len(data) < length:  # a short read is rare, and not the end of the file
                    more = os.pread(fd, length - len(data), offset + len(data))
                    if not more:
                        break
                    data += more
                return data
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{name} not found in {self.location}") from None
        except OSError as err:
            raise _translate(err, f"{name} in {self.location}") from None

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base_dir, _, _ = prefix.rpartition("/")
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for filename in sorted(filenames):
                if filename.startswith(_TMP_PREFIX):
                    continue
                name = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                if not name.startswith(prefix):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, filename)).st_size
                except FileNotFoundError:
                    continue
                yield FileInfo(name, size)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as err:
            raise _translate(err, f"{name} in {self.location}") from None

    def stat(self, name: str) -> FileInfo:
        try:
            return FileInfo(name, self._path(name).stat().st_size)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{name} not found in {self.location}") from None
        except OSError as err:
            raise _translate(err, f"{name} in {self.location}") from None

    def exists(self) -> bool:
        return self.root.exists()

    def create(self) -> None:
        try:
            if self.root.exists() and any(self.root.iterdir()):
                from safehold.errors import RepositoryExistsError

                raise RepositoryExistsError(f"{self.location} exists and is not empty")
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for top in _TOP_DIRS:
                (self.root / top).mkdir(mode=0o700, exist_ok=True)
            for index in range(256):
                (self.root / "data" / f"{index:02x}").mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            raise _translate(err, self.location) from None

    def cleanup_temp_files(self) -> int:
        """Remove `.tmp-*` leftovers of interrupted writes; returns how many were removed."""
        removed = 0
        for dirpath, _, filenames in os.walk(self.root):
            for filename in filenames:
                if filename.startswith(_TMP_PREFIX):
                    Path(dirpath, filename).unlink(missing_ok=True)
                    removed += 1
        return removed
