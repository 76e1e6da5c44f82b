"""Stream one file of a snapshot out of the repository, blob by blob (dump, source restores)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from safehold.errors import UsageError
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.walk import find_node


def dump_file(
    repo: Repository, snapshot: Snapshot, path: str, out: BinaryIO, *, workers: int = 1
) -> int:
    """Write the file `path` of `snapshot` to `out`, in order; returns the bytes written.
    With `workers` > 1, that many threads read, decrypt and verify the next blobs while the
    current one is written (at most 2 x `workers` blobs in memory): a big database dump
    comes out about as fast as both cores decode it, instead of one blob at a time."""
    node, _ = find_node(repo, snapshot.tree, path)
    if node is None:
        raise UsageError(f"{path} is not in snapshot {snapshot.short_id}")
    if node.type != "file":
        raise UsageError(f"{path} is a {node.type}, not a file", hint="dump works on files")
    blobs = list(node.content or [])
    written = 0
    if workers <= 1 or len(blobs) < 2:
        for blob_id in blobs:
            data = repo.load_blob(blob_id, BlobType.DATA)
            out.write(data)
            written += len(data)
        return written
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safehold-dump")
    pending: deque[Future[bytes]] = deque()
    try:
        for blob_id in blobs:
            pending.append(pool.submit(repo.load_blob, blob_id, BlobType.DATA))
            if len(pending) >= 2 * workers:
                written += _write(out, pending.popleft().result())
        while pending:
            written += _write(out, pending.popleft().result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return written


def _write(out: BinaryIO, data: bytes) -> int:
    out.write(data)
    return len(data)
