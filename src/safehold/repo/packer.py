"""Turns encoded blobs into pack files and index entries, from many threads at once.

Write order is what makes a crash harmless: a pack is fully written (temp, fsync, rename)
before any index mentions it, and an index is written before any snapshot refers to its blobs.
A pack with no index entry is an orphan that `prune` removes; it never breaks a snapshot.

Full packs are finished and written on a small writer pool so that compression workers never
wait for fsync; at most `max_pending_packs` full packs wait in memory (the memory bound).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from safehold.repo.crypto import MasterKey
from safehold.repo.pack import BlobType, EncodedBlob, PackBuilder, PackedBlob

DEFAULT_PACK_SIZE = 8 * 1024 * 1024

PackSink = Callable[[str, list[bytes]], None]


class Packer:
    """Thread-safe: `add` from any worker; `flush` before writing the index."""

    def __init__(
        self,
        master: MasterKey,
        write_pack: PackSink,
        target_size: int = DEFAULT_PACK_SIZE,
        writers: int = 1,
        max_pending_packs: int = 1,
    ) -> None:
        self._master = master
        self._write_pack = write_pack
        self._target_size = target_size
        self._lock = threading.Lock()
        self._current: dict[str, PackBuilder] = {}
        self._finished: dict[str, list[PackedBlob]] = {}
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="pack-writer")
        self._pending = threading.BoundedSemaphore(max_pending_packs)
        self._futures: list[Future[None]] = []
        self._error: BaseException | None = None
        self.bytes_written = 0
        self.packs_written = 0

    def add(self, blob: EncodedBlob) -> None:
        """Add a blob; data and tree blobs go to separate packs, as restic keeps them."""
        if self._error is not None:
            raise self._error
        kind = blob.type.value
        full: PackBuilder | None = None
        with self._lock:
            builder = self._current.setdefault(kind, PackBuilder())
            builder.add(blob)
            if builder.size >= self._target_size:
                full = builder
                self._current[kind] = PackBuilder()
        if full is not None:
            self._submit(full)

    def add_run(
        self, blob_type: BlobType, data: bytes, blobs: list[tuple[str, int, int | None]]
    ) -> None:
        """Add blobs encoded back to back in `data`, each (id, stored length, uncompressed
        length or None), to one pack: `add` for each without the per-blob pieces."""
        if self._error is not None:
            raise self._error
        kind = blob_type.value
        full: PackBuilder | None = None
        with self._lock:
            builder = self._current.setdefault(kind, PackBuilder())
            builder.add_run(blob_type, data, blobs)
            if builder.size >= self._target_size:
                full = builder
                self._current[kind] = PackBuilder()
        if full is not None:
            self._submit(full)

    def _submit(self, builder: PackBuilder) -> None:
        self._pending.acquire()
        try:
            future = self._pool.submit(self._write, builder)
        except BaseException:
            self._pending.release()
            raise
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(future)

    def _write(self, builder: PackBuilder) -> None:
        try:
            parts, entries = builder.finish_parts(self._master)
            digest = hashlib.sha256()
            for part in parts:
                digest.update(part)
            pack_id = digest.hexdigest()
            self._write_pack(pack_id, parts)
            with self._lock:
                self._finished[pack_id] = entries
                self.bytes_written += sum(len(part) for part in parts)
                self.packs_written += 1
        except BaseException as error:
            if self._error is None:
                self._error = error
            raise
        finally:
            self._pending.release()

    def flush(self) -> None:
        """Write every partly filled pack and wait until all packs are stored."""
        with self._lock:
            pending = [builder for builder in self._current.values() if len(builder)]
            self._current = {}
        for builder in pending:
            self._submit(builder)
        with self._lock:
            futures = list(self._futures)
            self._futures = []
        for future in futures:
            future.result()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

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

    def give_back(self, finished: dict[str, list[PackedBlob]]) -> None:
        """Return packs taken by take_finished whose index write failed or was interrupted,
        so the next index write includes them (indexing a pack twice is harmless)."""
        with self._lock:
            self._finished = {**finished, **self._finished}
