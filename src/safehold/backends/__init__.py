"""Storage backends: one small interface (see `base.Backend`), several places to keep bytes."""

from safehold.backends.base import Backend, FileInfo, ObjectNotFoundError
from safehold.backends.local import LocalBackend
from safehold.backends.location import open_backend
from safehold.backends.memory import MemoryBackend

__all__ = [
    "Backend",
    "FileInfo",
    "LocalBackend",
    "MemoryBackend",
    "ObjectNotFoundError",
    "open_backend",
]
