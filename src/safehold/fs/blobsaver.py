"""Deduplicate, compress, encrypt and pack blobs on a bounded thread pool.

Memory stays bounded whatever the data size: at most `max_inflight_bytes` of plaintext wait
for a worker, plus the packs being filled and written (2 kinds x pack size, see docs/design.md).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress

from safehold.fs.smallfiles import BLOB_RECORD, SlotReader
from safehold.repo.crypto import EXTENSION
from safehold.repo.format import zstd_compressor
from safehold.repo.pack import BlobType, EncodedBlob, encode_blob
from safehold.repo.packer import Packer
from safehold.repo.repository import Repository

HELD_BLOBS = 64  # save_batched encodes this many small blobs at once
HELD_BYTES = 1024 * 1024  # or this much of them


class SaverStoppedError(Exception):
    """The backup is being interrupted: the saver takes no new blobs (readers stop here)."""


class ByteBudget:
    """A counting semaphore in bytes; one oversized request is let through when idle."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()
        self._closed = False

    def acquire(self, amount: int) -> None:
        """Wait for room; raises SaverStoppedError once closed (also while waiting)."""
        with self._cond:
            while not self._closed and self._used and self._used + amount > self._limit:
                self._cond.wait()
            if self._closed:
                raise SaverStoppedError("the backup is stopping")
            self._used += amount

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def release(self, amount: int) -> None:
        with self._cond:
            self._used -= amount
            self._cond.notify_all()


class BlobSaver:
    def __init__(
        self,
        repo: Repository,
        packer: Packer,
        workers: int,
        compression_level: int | None,
        max_inflight_bytes: int,
    ) -> None:
        self._repo = repo
        self._packer = packer
        self._level = compression_level
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="blob")
        self._budget = ByteBudget(max_inflight_bytes)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._here_done = threading.Condition(self._lock)
        self._here = 0  # save_here calls running on reader threads
        self._error: BaseException | None = None
        self._futures: set[Future[None]] = set()
        self._stopped = False
        self._held: list[tuple[str, BlobType, bytes]] = []  # see save_batched
        self._held_bytes = 0
        self.new_blobs = 0
        self.new_bytes = 0

    def _claim(self, blob_id: str, size: int) -> bool:
        """True (once per id) when the blob is new to the repository and to this run."""
        if self._repo.index.has(blob_id):
            return False
        with self._lock:
            if blob_id in self._pending:
                return False
            self._pending.add(blob_id)
            self.new_blobs += 1
            self.new_bytes += size
        return True

    def save(self, blob_id: str, blob_type: BlobType, data: bytes) -> bool:
        """Queue a blob unless the repository or this run already has it; True if queued."""
        if self._error is not None:
            raise self._error
        self._repo.check_lock()  # once per chunk: a big unchanged file writes nothing
        if self._stopped:
            raise SaverStoppedError("the backup is stopping")
        if not self._claim(blob_id, len(data)):
            return False
        self._budget.acquire(len(data))
        future = self._pool.submit(self._encode_and_pack, blob_id, blob_type, data)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)
        return True

    def save_here(self, blob_id: str, blob_type: BlobType, data: bytes) -> bool:
        """`save`, but compress and encrypt on the calling thread: for a small file's one
        blob, handing it to the pool (a future, the byte budget, two thread switches) costs
        more than the work. A failure stops the backup as a pool worker's does."""
        level = self._level
        return self._pack_here(
            blob_id,
            len(data),
            lambda: encode_blob(self._repo.master, blob_id, blob_type, data, level),
        )

    def save_batched(self, blob_id: str, blob_type: BlobType, data: bytes) -> bool:
        """`save_here` for small blobs (a folder's tree): a new one is held, and encoded with
        the next ones in one `encrypt_many_into` call (one cipher setup per HELD_BLOBS, not
        per blob); `wait` and `settle` encode the rest. True if new."""
        if self._error is not None:
            raise self._error
        self._repo.check_lock()
        if self._stopped:
            raise SaverStoppedError("the backup is stopping")
        if not self._claim(blob_id, len(data)):
            return False
        with self._lock:
            self._held.append((blob_id, blob_type, data))
            self._held_bytes += len(data)
            full = len(self._held) >= HELD_BLOBS or self._held_bytes >= HELD_BYTES
        if full:
            self._encode_held()
        return True

    def _encode_held(self) -> None:
        """Compress, encrypt and pack the blobs save_batched holds (on the calling thread)."""
        with self._lock:
            held, self._held, self._held_bytes = self._held, [], 0
            if not held:
                return
            self._here += 1
        with self._leaving_here():
            level = self._level
            for blob_type in BlobType:
                payloads: list[bytes] = []
                blobs: list[tuple[str, int, int | None]] = []
                for blob_id, kind, data in held:
                    if kind is not blob_type:
                        continue
                    payload, uncompressed = data, None
                    if level is not None and data:
                        compressed = zstd_compressor(level).compress(data)
                        if len(compressed) < len(data):
                            payload, uncompressed = compressed, len(data)
                    payloads.append(payload)
                    blobs.append((blob_id, len(payload) + EXTENSION, uncompressed))
                if payloads:
                    out = bytearray(sum(length for _, length, _ in blobs))
                    self._repo.master.encrypt_many_into(payloads, memoryview(out))
                    self._packer.add_run(blob_type, bytes(out), blobs)

    def save_encoded_run(self, read: SlotReader, records: bytes) -> None:
        """Pack the new ones of data blobs a reader process encoded back to back into a
        slot (see fs/smallfiles: BLOB_RECORD per blob, in order; `read(start, end)` gives
        the slot's bytes). What is left here is the dedup, and one read of each run of new
        blobs into the pack."""
        self._enter_here()
        with self._leaving_here():
            run: list[tuple[str, int, int | None]] = []
            start = position = 0
            for raw_id, length, uncompressed in BLOB_RECORD.iter_unpack(records):
                blob_id = raw_id.hex()
                if self._claim(blob_id, uncompressed or length - EXTENSION):
                    run.append((blob_id, length, uncompressed or None))
                else:  # known: the run before it is packed, the next starts after it
                    if run:
                        self._packer.add_run(BlobType.DATA, read(start, position), run)
                        run = []
                    start = position + length
                position += length
            if run:
                self._packer.add_run(BlobType.DATA, read(start, position), run)

    def _enter_here(self) -> None:
        """Count a blob packed on the calling thread, so that `settle` after `stop` waits
        for it (nothing unindexed); refused once the saver failed, stopped or lost its lock."""
        if self._error is not None:
            raise self._error
        self._repo.check_lock()
        with self._lock:
            if self._stopped:
                raise SaverStoppedError("the backup is stopping")
            self._here += 1

    @contextmanager
    def _leaving_here(self) -> Iterator[None]:
        """The end of work counted by `_enter_here`: a failure becomes the saver's error
        (the first one wins), and `settle` hears that the work is done."""
        try:
            yield
        except BaseException as error:
            with self._lock:
                if self._error is None:
                    self._error = error
            raise
        finally:
            with self._lock:
                self._here -= 1
                self._here_done.notify_all()

    def _pack_here(self, blob_id: str, size: int, encode: Callable[[], EncodedBlob]) -> bool:
        self._enter_here()
        with self._leaving_here():
            if not self._claim(blob_id, size):
                return False
            self._packer.add(encode())
        return True

    def hash_and_save(self, data: bytes) -> Future[str]:
        """Hash a data blob on the pool too, then store it if new; the future gives its id.

        For large files: the reader only reads and cuts, so hashing a big file's chunks runs
        on every core instead of on the one thread reading that file.
        """
        if self._error is not None:
            raise self._error
        self._repo.check_lock()
        if self._stopped:
            raise SaverStoppedError("the backup is stopping")
        self._budget.acquire(len(data))
        future = self._pool.submit(self._hash_encode_and_pack, data)
        with self._lock:
            self._futures.add(future)  # type: ignore[arg-type]
        future.add_done_callback(self._done)  # type: ignore[arg-type]
        return future

    def _hash_encode_and_pack(self, data: bytes) -> str:
        try:
            blob_id = hashlib.sha256(data).hexdigest()
            if self._claim(blob_id, len(data)):
                encoded = encode_blob(self._repo.master, blob_id, BlobType.DATA, data, self._level)
                self._packer.add(encoded)
            return blob_id
        finally:
            self._budget.release(len(data))

    def _encode_and_pack(self, blob_id: str, blob_type: BlobType, data: bytes) -> None:
        try:
            encoded = encode_blob(self._repo.master, blob_id, blob_type, data, self._level)
            self._packer.add(encoded)
        finally:
            self._budget.release(len(data))

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
        if future.cancelled():  # shutdown after an interrupt: exception() would raise here
            return
        error = future.exception()
        if error is not None and self._error is None:
            self._error = error

    def _wait_here(self) -> None:
        with self._lock:
            while self._here:
                self._here_done.wait()

    def wait(self) -> None:
        """Block until every queued blob is packed; re-raise the first worker error."""
        if self._error is None:
            self._encode_held()
        self._wait_here()
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                break
            for future in pending:
                future.exception()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Take no new blobs from now on (an interrupted backup): `save` and `hash_and_save`
        raise SaverStoppedError, also in readers waiting for room. Blobs already queued are
        still packed; `settle` waits for them."""
        with self._lock:
            self._stopped = True
        self._budget.close()

    def settle(self) -> None:
        """Wait until every queued blob is packed or failed, without raising."""
        with suppress(Exception):  # recorded: `wait` raises it
            self._encode_held()
        self._wait_here()
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                return
            for future in pending:
                if not future.cancelled():
                    future.exception()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
