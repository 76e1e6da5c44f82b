"""The backend interface every storage place implements.

Names are restic's repository paths with `/` separators: `config`, `keys/<id>`, `locks/<id>`,
`snapshots/<id>`, `index/<id>`, `data/<2 hex>/<id>`, and safehold's own `safehold/...`.
A backend stores opaque bytes; it knows nothing about encryption or object kinds.
Writes are whole-object and atomic: a reader sees either nothing or the complete object.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from safehold.errors import BackendError, BackendPermissionError


class ObjectNotFoundError(BackendError):
    """The named object does not exist in the backend."""

    default_hint = "run `safehold check` to see what the missing object affects"


ObjectData = bytes | Sequence[bytes]


def join_data(data: ObjectData) -> bytes:
    """The object's bytes in one piece (for backends that need that)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    return b"".join(data)


class ObjectLockedError(BackendPermissionError):
    """The storage refuses to delete an object still under retention (S3 Object Lock)."""

    default_hint = "it becomes deletable when its retention ends; run prune again then"


class DeleteRefusedError(BackendPermissionError):
    """The storage refuses to delete an object for these credentials: a write-only backup login
    (an S3 policy without DeleteObject, an SFTP account whose sftp-server denies `remove`)."""

    default_hint = (
        "these credentials may not delete (a write-only backup login?): run forget and prune "
        "with the maintenance credentials that may"
    )


LOCKS_PREFIX = "locks/"


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int


@dataclass(frozen=True)
class Capabilities:
    """What a backend is, declared once (restic's `Backend.Properties()`), so callers ask the
    field instead of probing with isinstance or getattr.

    `local_path`: the objects are files under this directory on this machine, so a read is a
    cheap local read (the restorer reads blob by blob instead of caching whole packs).
    `cleans_temp_files`: interrupted writes leave temp files beside the objects that
    `cleanup_temp_files()` removes (prune calls it under the exclusive lock).
    `object_lock`: every object except lock files is written with a retention date, so
    deletes may be refused with ObjectLockedError until it passes.
    `forkable`: a child process forked from this one may read through its copy of the
    backend once it has called `after_fork()` (connections of its own, cheap to make), so
    a restore can read and decode on worker processes."""

    local_path: Path | None = None
    cleans_temp_files: bool = False
    object_lock: bool = False
    forkable: bool = False


@runtime_checkable
class Backend(Protocol):
    """Put, get, get a range, list, delete, stat: all a repository needs from storage."""

    @property
    def location(self) -> str:
        """A human-readable place (never containing credentials)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What this backend is beyond the verbs below; constant for the backend's life."""
        ...

    def after_fork(self) -> None:
        """In a child process forked with this backend in its memory: drop what it shares
        with the parent (connections, sessions, locks a parent thread may have held), so
        the next call makes its own. Only a `forkable` backend is used after it."""
        ...

    def put(self, name: str, data: ObjectData) -> None:
        """Store `data` under `name` atomically, replacing nothing: callers never overwrite.

        `data` may come in pieces (a pack's blobs), stored back to back, so that large
        objects need not be joined into one more copy in memory.
        """
        ...

    def get(self, name: str) -> bytes:
        """Return the whole object; raise ObjectNotFoundError if absent."""
        ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return `length` bytes from `offset` (fewer only at the object's end)."""
        ...

    def list(self, prefix: str) -> Iterator[FileInfo]:
        """Yield every object whose name starts with `prefix` (e.g. `snapshots/`)."""
        ...

    def delete(self, name: str) -> None:
        """Remove the object; deleting a missing object is not an error.

        Refused by the storage: DeleteRefusedError (ObjectLockedError under retention), except
        for lock files (`locks/...`): a write-only login that may not delete them leaves them
        in place; they go stale (lock.STALE_AFTER_NS) and maintenance removes them.
        """
        ...

    def stat(self, name: str) -> FileInfo:
        """Return name and size; raise ObjectNotFoundError if absent."""
        ...

    def exists(self) -> bool:
        """Whether the repository location itself exists (before any object is read)."""
        ...

    def create(self) -> None:
        """Prepare an empty location for a new repository (directories, bucket checks)."""
        ...

    def cleanup_temp_files(self) -> int:
        """Remove the leftovers of interrupted writes; returns how many were removed (always 0
        where `capabilities.cleans_temp_files` is False). Only when no writer is live."""
        ...


RetentionMode = Literal["GOVERNANCE", "COMPLIANCE"]


@runtime_checkable
class RetentionBackend(Protocol):
    """A backend whose objects carry an Object Lock retention that can be read and extended
    (S3). repo/retention.py uses it to keep what the kept snapshots need locked."""

    lock_retention: tuple[RetentionMode, float] | None

    def object_retention(self, name: str) -> tuple[RetentionMode, datetime] | None:
        """The object's mode and retain-until date (None: no retention)."""
        ...

    def extend_retention(self, name: str, mode: RetentionMode, until: datetime) -> None:
        """Push the object's retain-until date to `until` (never shortens)."""
        ...

    def written_retention(self) -> dict[str, tuple[RetentionMode, datetime]]:
        """The retention this backend gave the objects it wrote."""
        ...


def retention_backend(backend: Backend) -> RetentionBackend | None:
    """The backend as a RetentionBackend when it writes objects under Object Lock."""
    if backend.capabilities.object_lock and isinstance(backend, RetentionBackend):
        return backend
    return None
