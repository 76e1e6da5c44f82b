"""Whole-pack reads for remote storage: one request per pack instead of one per blob.

On S3 or SFTP every ranged read is a round trip with its own request overhead, so restoring
blob by blob is bound by requests, not bytes. A restore reads most blobs of each pack it
touches, in order; fetching the pack once and serving its blobs from memory is much cheaper.
The cache is bounded in bytes (least recently used packs are dropped) and a pack is fetched
once even when several threads want it at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from safehold.backends.base import Backend


class PackCache:
    def __init__(self, backend: Backend, limit_bytes: int = 48 * 1024 * 1024) -> None:
        self._backend = backend
        self._limit = limit_bytes
        self._packs: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def read(self, name: str, offset: int, length: int) -> bytes:
        data = self._cached(name)
        if data is None:
            with self._lock:
                loader = self._loading.setdefault(name, threading.Lock())
            with loader:  # one download per pack; the others wait for it
                data = self._cached(name)
                if data is None:
                    data = self._backend.get(name)
                    self._store(name, data)
            with self._lock:
                self._loading.pop(name, None)
        return data[offset : offset + length]

    def _cached(self, name: str) -> bytes | None:
        with self._lock:
            data = self._packs.get(name)
            if data is not None:
                self._packs.move_to_end(name)
            return data

    def _store(self, name: str, data: bytes) -> None:
        with self._lock:
            if name in self._packs or len(data) > self._limit:
                return
            self._packs[name] = data
            self._size += len(data)
            while self._size > self._limit and len(self._packs) > 1:
                _, evicted = self._packs.popitem(last=False)
                self._size -= len(evicted)
