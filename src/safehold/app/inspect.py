"""Read-only use cases: list snapshots, list files, diff two snapshots, dump a file, stats."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from safehold.errors import UsageError
from safehold.repo.format import FileType
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.tree import Node
from safehold.repo.walk import collect_used_blobs, find_node, walk_tree


def snapshot_json(snapshot: Snapshot) -> dict[str, object]:
    return {
        "id": snapshot.id,
        "short_id": snapshot.short_id,
        "time": format_time(snapshot.time),
        "name": snapshot.name,
        "reason": snapshot.reason,
        "complete": snapshot.complete,
        "paths": snapshot.paths,
        "hostname": snapshot.hostname,
        "username": snapshot.username,
        "tags": snapshot.tags,
        "parent": snapshot.parent,
        "tree": snapshot.tree,
        "summary": snapshot.safehold.get("summary"),
    }


def filter_snapshots(
    snapshots: list[Snapshot], reason: str | None = None, tags: list[str] | None = None
) -> list[Snapshot]:
    result = snapshots
    if reason:
        result = [s for s in result if s.reason == reason or reason in s.tags]
    for tag in tags or []:
        result = [s for s in result if tag in s.tags]
    return result


def node_json(path: str, node: Node) -> dict[str, object]:
    value: dict[str, object] = {
        "path": path,
        "name": node.display_name,
        "type": node.type,
        "mode": node.mode,
        "size": node.size,
        "mtime": format_time(node.mtime),
        "uid": node.uid,
        "gid": node.gid,
    }
    if node.type == "symlink":
        value["linktarget"] = node.linktarget.decode("utf-8", "replace")
    return value


def list_files(
    repo: Repository, snapshot: Snapshot, path: str | None
) -> Iterator[tuple[str, Node]]:
    if not path or path.strip("/") == "":
        yield from walk_tree(repo, snapshot.tree)
        return
    node, subtree = find_node(repo, snapshot.tree, path)
    if node is None:
        raise UsageError(
            f"{path} is not in snapshot {snapshot.short_id}",
            hint=f"list it with `safehold ls {snapshot.short_id}`",
        )
    clean = "/" + path.strip("/")
    yield clean, node
    if subtree:
        yield from walk_tree(repo, subtree, clean)


@dataclass
class DiffEntry:
    change: str  # "+", "-", "M" (content), "T" (type), "U" (metadata only)
    path: str


@dataclass
class DiffResult:
    entries: list[DiffEntry] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    modified: int = 0


def _metadata_key(node: Node) -> tuple[object, ...]:
    return (node.mode, node.mtime.ns, node.uid, node.gid, node.linktarget, node.size)


def diff_snapshots(repo: Repository, first: Snapshot, second: Snapshot) -> DiffResult:
    result = DiffResult()
    _diff_trees(repo, first.tree, second.tree, "", result)
    return result


def _diff_trees(
    repo: Repository, left_id: str | None, right_id: str | None, prefix: str, out: DiffResult
) -> None:
    if left_id == right_id:
        return
    left = {n.name: n for n in repo.load_tree(left_id)} if left_id else {}
    right = {n.name: n for n in repo.load_tree(right_id)} if right_id else {}
    for name in sorted(set(left) | set(right)):
        old, new = left.get(name), right.get(name)
        display = (new or old).display_name  # type: ignore[union-attr]
        path = f"{prefix}/{display}"
        if old is None or new is None:
            change = "+" if old is None else "-"
            node = new or old
            assert node is not None
            out.entries.append(DiffEntry(change, path + ("/" if node.type == "dir" else "")))
            if change == "+":
                out.added += 1
            else:
                out.removed += 1
            if node.type == "dir":
                _diff_trees(
                    repo, None if change == "+" else node.subtree,
                    node.subtree if change == "+" else None, path, out,
                )  # fmt: skip
            continue
        if old.type != new.type:
            out.entries.append(DiffEntry("T", path))
            out.modified += 1
            continue
        if old.type == "dir":
            _diff_trees(repo, old.subtree, new.subtree, path, out)
            continue
        if old.content != new.content:
            out.entries.append(DiffEntry("M", path))
            out.modified += 1
        elif _metadata_key(old) != _metadata_key(new):
            out.entries.append(DiffEntry("U", path))


@dataclass
class RepositoryStats:
    snapshots: int
    packs: int
    pack_bytes: int
    data_blobs: int
    tree_blobs: int
    uncompressed_bytes: int
    stored_blob_bytes: int
    restore_size_latest: int
    files_latest: int
    index_files: int
    keys: int

    @property
    def compression_ratio(self) -> float:
        return self.uncompressed_bytes / self.stored_blob_bytes if self.stored_blob_bytes else 1.0


def repository_stats(repo: Repository) -> RepositoryStats:
    snapshots = repo.list_snapshots()
    index = repo.index
    pack_bytes = sum(info.size for info in repo.backend.list("data/"))
    trees, data = collect_used_blobs(repo, [s.tree for s in snapshots])
    uncompressed = 0
    stored = 0
    for blob_id in trees | data:
        location = index.lookup(blob_id)
        if location is not None:
            uncompressed += location.blob.plaintext_length
            stored += location.blob.length
    restore_size = 0
    files = 0
    if snapshots:
        for _, node in walk_tree(repo, snapshots[-1].tree):
            if node.type == "file":
                restore_size += node.size
                files += 1
    return RepositoryStats(
        snapshots=len(snapshots),
        packs=len(index.packs),
        pack_bytes=pack_bytes,
        data_blobs=len(data),
        tree_blobs=len(trees),
        uncompressed_bytes=uncompressed,
        stored_blob_bytes=stored,
        restore_size_latest=restore_size,
        files_latest=files,
        index_files=len(repo.list_ids(FileType.INDEX)),
        keys=len(repo.list_ids(FileType.KEY)),
    )


def human_bytes(amount: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"
