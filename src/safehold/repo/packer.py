"""Turns encoded blobs into pack files and index entries, from many threads at once.

Write order is what makes a crash harmless: a pack is fully written (temp, fsync, rename)
before any index mentions it, and an index is written before any snapshot refers to its blobs.
A pack with no index entry is an orphan that `prune` removes; it never breaks a snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from safehold.repo.crypto import MasterKey
from safehold.repo.format import hash_id
from safehold.repo.pack import EncodedBlob, PackBuilder, PackedBlob

DEFAULT_PACK_SIZE = 16 * 1024 * 1024

PackSink = Callable[[str, bytes], None]


class Packer:
    """Thread-safe: `add` from any worker; a full pack is written by the thread that filled it."""

    def __init__(
        self, master: MasterKey, write_pack: PackSink, target_size: int = DEFAULT_PACK_SIZE
    ) -> None:
        self._master = master
        self._write_pack = write_pack
        self._target_size = target_size
        self._lock = threading.Lock()
        self._current: dict[str, PackBuilder] = {}
        self._finished: dict[str, list[PackedBlob]] = {}
        self.bytes_written = 0
        self.packs_written = 0

    def add(self, blob: EncodedBlob) -> None:
        """Add a blob; data and tree blobs go to separate packs, as restic keeps them."""
        kind = blob.type.value
        full: PackBuilder | None = None
        with self._lock:
            builder = self._current.setdefault(kind, PackBuilder())
            builder.add(blob)
            if builder.size >= self._target_size:
                full = builder
                self._current[kind] = PackBuilder()
        if full is not None:
            self._write(full)

    def _write(self, builder: PackBuilder) -> None:
        data, entries = builder.finish(self._master)
        pack_id = hash_id(data)
        self._write_pack(pack_id, data)
        with self._lock:
            self._finished[pack_id] = entries
            self.bytes_written += len(data)
            self.packs_written += 1

    def flush(self) -> None:
        """Write every partly filled pack."""
        with self._lock:
            pending = [builder for builder in self._current.values() if len(builder)]
            self._current = {}
        for builder in pending:
            self._write(builder)

    @property
    def finished_count(self) -> int:
        """Packs written but not yet handed out by take_finished."""
        with self._lock:
            return len(self._finished)

    def take_finished(self) -> dict[str, list[PackedBlob]]:
        """Packs written since the last call, for the next index file."""
        with self._lock:
            finished, self._finished = self._finished, {}
        return finished
