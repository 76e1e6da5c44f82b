"""Stream one file of a snapshot out of the repository, blob by blob (dump, source restores)."""

from __future__ import annotations

from typing import BinaryIO

from safehold.errors import UsageError
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.walk import find_node


def dump_file(repo: Repository, snapshot: Snapshot, path: str, out: BinaryIO) -> int:
    node, _ = find_node(repo, snapshot.tree, path)
    if node is None:
        raise UsageError(f"{path} is not in snapshot {snapshot.short_id}")
    if node.type != "file":
        raise UsageError(f"{path} is a {node.type}, not a file", hint="dump works on files")
    written = 0
    for blob_id in node.content or []:
        data = repo.load_blob(blob_id, BlobType.DATA)
        out.write(data)
        written += len(data)
    return written
