"""An in-memory backend: the fake for tests and the reference for the conformance suite."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from safehold.backends.base import (
    Capabilities,
    FileInfo,
    ObjectData,
    ObjectNotFoundError,
    join_data,
)
from safehold.errors import RepositoryExistsError


class MemoryBackend:
    def __init__(self, name: str = "memory") -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._name = name
        self._created = False

    @property
    def location(self) -> str:
        return f"memory:{self._name}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(forkable=True)

    def after_fork(self) -> None:
        """The child reads its own copy of the objects (what it writes stays its own)."""
        self._lock = threading.Lock()  # a parent thread may have held it at the fork

    def cleanup_temp_files(self) -> int:
        """Nothing to remove: a put is one dict assignment."""
        return 0

    def put(self, name: str, data: ObjectData) -> None:
        joined = join_data(data)
        with self._lock:
            self._objects[name] = joined

    def get(self, name: str) -> bytes:
        with self._lock:
            try:
                return self._objects[name]
            except KeyError:
                raise ObjectNotFoundError(f"{name} not found in {self.location}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        return self.get(name)[offset : offset + length]

    def list(self, prefix: str) -> Iterator[FileInfo]:
        with self._lock:
            items = [(n, len(d)) for n, d in self._objects.items() if n.startswith(prefix)]
        for name, size in sorted(items):
            yield FileInfo(name, size)

    def delete(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)

    def stat(self, name: str) -> FileInfo:
        return FileInfo(name, len(self.get(name)))

    def exists(self) -> bool:
        return self._created or bool(self._objects)

    def create(self) -> None:
        with self._lock:
            if self._objects:
                raise RepositoryExistsError(f"{self.location} exists and is not empty")
            self._created = True
