"""Verify a repository: structure always, every byte with `read_data`.

Each problem names the object and what it affects (which snapshots), so the user knows what
still restores. Checking never modifies the repository.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from safehold.backends.base import ObjectNotFoundError
from safehold.errors import IntegrityError, MissingObjectError, SafeholdError
from safehold.repo.crypto import EXTENSION, AuthenticationError
from safehold.repo.format import FileType, hash_id, is_valid_id, object_name
from safehold.repo.index import MasterIndex
from safehold.repo.pack import PackFormatError, read_header
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

_PLAIN_ENTRY_SIZE = 37
_COMPRESSED_ENTRY_SIZE = 41


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshots_checked: int = 0
    packs_checked: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    damaged_blobs: set[str] = field(default_factory=set)
    affected_snapshots: list[str] = field(default_factory=list)
    records_checked: int = 0  # safehold objects under safehold/
    stale_locks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def expected_pack_size(blobs: list[object]) -> int:
    from safehold.repo.pack import PackedBlob

    size = 0
    header = 0
    for blob in blobs:
        assert isinstance(blob, PackedBlob)
        size += blob.length
        header += (
            _COMPRESSED_ENTRY_SIZE if blob.uncompressed_length is not None else (_PLAIN_ENTRY_SIZE)
        )
    return size + header + EXTENSION + 4


def parse_subset(subset: str) -> Callable[[list[str]], list[str]]:
    """`N%` picks that share of packs at random; `n/t` picks the n-th of t groups (by id)."""
    text = subset.strip()
    if text.endswith("%"):
        share = float(text[:-1])
        if not 0 < share <= 100:
            raise ValueError("subset percentage must be in (0, 100]")

        def pick_share(ids: list[str]) -> list[str]:
            count = max(1, round(len(ids) * share / 100)) if ids else 0
            return random.sample(ids, count)

        return pick_share
    number, _, total = text.partition("/")
    n, t = int(number), int(total)
    if not 1 <= n <= t:
        raise ValueError("subset n/t needs 1 <= n <= t")

    def pick_group(ids: list[str]) -> list[str]:
        return [pack for pack in ids if int(pack[:8], 16) % t == n - 1]

    return pick_group


class Checker:
    def __init__(self, repo: Repository, progress: ProgressCallback | None = None) -> None:
        self.repo = repo
        self.progress = progress
        self.report = CheckReport()
        self._damaged_index = False

    def run(self, read_data: bool = False, subset: str | None = None) -> CheckReport:
        index = self._check_index()
        self._check_packs_exist(index)
        snapshots = self._check_snapshots(index)
        if read_data:
            pack_ids = sorted(index.packs)
            if subset:
                pack_ids = parse_subset(subset)(pack_ids)
            self._read_packs(index, pack_ids)
        if self.report.damaged_blobs:
            self._find_affected(snapshots)
        self._check_safehold_objects()
        self._check_locks()
        return self.report

    def _check_safehold_objects(self) -> None:
        """Read, authenticate and parse every safehold object under `safehold/` (drill
        records, holds, any record kind): each damaged one is an error that names it."""
        for info in sorted(self.repo.backend.list("safehold/"), key=lambda i: i.name):
            kind, _, record_id = info.name.removeprefix("safehold/").rpartition("/")
            if not kind or not is_valid_id(record_id):
                self.report.warnings.append(
                    f"{info.name} is not a safehold record (unknown name; restic ignores it)"
                )
                continue
            self.report.records_checked += 1
            try:
                self.repo.load_record(kind, record_id)
            except (SafeholdError, ValueError) as err:
                self.report.errors.append(f"{err} (a damaged safehold record: delete it, or "
                                          "copy it back from another destination)")  # fmt: skip

    def _still_there(self, name: str) -> bool:
        try:
            self.repo.backend.stat(name)
        except ObjectNotFoundError:
            return False
        return True

    def _check_locks(self) -> None:
        """Stale and unreadable locks: they block restic (and exclusive commands of other
        hosts) until someone removes them."""
        now = self.repo.clock().ns
        for lock_id, lock in self.repo.list_locks():
            name = object_name(FileType.LOCK, lock_id)
            if lock is None and not self._still_there(name):
                continue  # replaced by its refresh, or released, since the listing
            if lock is None:
                problem = "cannot be read (damaged, or written with another key)"
            elif lock.is_stale(now, self.repo.host.hostname):
                problem = f"is stale: {lock.describe()}"
            else:
                continue
            self.report.stale_locks.append(lock_id)
            self.report.warnings.append(
                f"lock {name} {problem}; it blocks restic until `restic unlock`: remove it "
                "with `safehold unlock` once no process of that host uses the repository"
            )

    def _check_index(self) -> MasterIndex:
        def unreadable(index_id: str, err: SafeholdError) -> None:
            self.report.errors.append(f"index/{index_id}: {err}")
            self._damaged_index = True

        index = self.repo.build_index(unreadable)
        if self._damaged_index:
            self.report.errors.append(
                "the index is damaged: run `safehold repair index` to rebuild it from the "
                "pack headers (data is not touched), then check again"
            )
        self.repo._index = index
        return index

    def _check_packs_exist(self, index: MasterIndex) -> None:
        stored = {
            info.name.rsplit("/", 1)[-1]: info.size for info in self.repo.backend.list("data/")
        }
        for pack_id, blobs in index.packs.items():
            self.report.packs_checked += 1
            if pack_id not in stored:
                self.report.errors.append(
                    f"pack {pack_id[:8]} is in the index but missing from the repository "
                    f"({len(blobs)} blobs lost)"
                )
                self.report.damaged_blobs.update(blob.id for blob in blobs)
                continue
            expected = expected_pack_size(list(blobs))
            if stored[pack_id] != expected:
                self.report.errors.append(
                    f"pack {pack_id[:8]} has size {stored[pack_id]}, the index expects {expected}"
                )
                self.report.damaged_blobs.update(blob.id for blob in blobs)
        for pack_id in stored:
            if pack_id not in index.packs and self._damaged_index:
                self.report.warnings.append(
                    f"pack {pack_id[:8]} is not referenced by any intact index "
                    "(`safehold repair index` indexes it again)"
                )
            elif pack_id not in index.packs:
                self.report.warnings.append(
                    f"pack {pack_id[:8]} is not referenced by any index "
                    "(left by an interrupted backup; `safehold prune` removes it)"
                )

    def _check_snapshots(self, index: MasterIndex) -> list[Snapshot]:
        snapshots: list[Snapshot] = []
        for snapshot_id in self.repo.list_ids(FileType.SNAPSHOT):
            try:
                snapshots.append(self.repo.load_snapshot(snapshot_id))
            except SafeholdError as err:
                self.report.errors.append(f"snapshot {snapshot_id[:8]}: {err}")
        seen_trees: set[str] = set()
        for snapshot in snapshots:
            self.report.snapshots_checked += 1
            if self.progress:
                self.progress(Progress("snapshots", self.report.snapshots_checked, len(snapshots)))
            self._check_tree(snapshot, snapshot.tree, index, seen_trees, "")
        return snapshots

    def _check_tree(
        self,
        snapshot: Snapshot,
        tree_id: str,
        index: MasterIndex,
        seen: set[str],
        path: str,
    ) -> None:
        if tree_id in seen:
            return
        seen.add(tree_id)
        if not index.has(tree_id):
            self.report.errors.append(
                f"snapshot {snapshot.short_id}: tree {tree_id[:8]} ({path or '/'}) is missing"
            )
            self.report.damaged_blobs.add(tree_id)
            return
        try:
            nodes = self.repo.load_tree(tree_id)
        except (IntegrityError, MissingObjectError) as err:
            self.report.errors.append(f"snapshot {snapshot.short_id}: {path or '/'}: {err}")
            self.report.damaged_blobs.add(tree_id)
            return
        for node in nodes:
            child = f"{path}/{node.display_name}"
            if node.type == "file":
                for blob_id in node.content or []:
                    if not index.has(blob_id):
                        self.report.errors.append(
                            f"snapshot {snapshot.short_id}: {child}: data blob {blob_id[:8]} "
                            "is missing"
                        )
                        self.report.damaged_blobs.add(blob_id)
            elif node.type == "dir":
                if not node.subtree:
                    self.report.errors.append(
                        f"snapshot {snapshot.short_id}: {child}: directory without subtree"
                    )
                    continue
                self._check_tree(snapshot, node.subtree, index, seen, child)

    def _read_packs(self, index: MasterIndex, pack_ids: list[str]) -> None:
        for number, pack_id in enumerate(pack_ids, 1):
            if self.progress:
                self.progress(Progress("read data", number, len(pack_ids)))
            self._read_pack(index, pack_id)

    def _read_pack(self, index: MasterIndex, pack_id: str) -> None:
        name = object_name(FileType.PACK, pack_id)
        indexed = index.packs[pack_id]
        try:
            data = self.repo.backend.get(name)
        except SafeholdError as err:
            self.report.errors.append(f"pack {pack_id[:8]}: {err}")
            self.report.damaged_blobs.update(blob.id for blob in indexed)
            return
        self.report.packs_read += 1
        self.report.bytes_read += len(data)
        if hash_id(data) != pack_id:
            self.report.errors.append(
                f"pack {pack_id[:8]} is corrupt: its content does not match its name"
            )
        try:
            header = read_header(self.repo.master, data)
        except (AuthenticationError, PackFormatError) as err:
            self.report.errors.append(f"pack {pack_id[:8]}: header unreadable ({err})")
            header = []
        if header and {b.id for b in header} != {b.id for b in indexed}:
            self.report.errors.append(f"pack {pack_id[:8]}: header does not match the index")
        for blob in indexed:
            stored = data[blob.offset : blob.offset + blob.length]
            try:
                self.repo.decode_blob_checked(pack_id, blob, stored)
            except IntegrityError as err:
                self.report.errors.append(str(err))
                self.report.damaged_blobs.add(blob.id)

    def _find_affected(self, snapshots: list[Snapshot]) -> None:
        """Which snapshots use a damaged blob: those cannot fully restore; the rest can."""
        damaged = self.report.damaged_blobs
        for snapshot in snapshots:
            if self._tree_uses(snapshot.tree, damaged, {}):
                self.report.affected_snapshots.append(snapshot.id)
        if self.report.affected_snapshots:
            names = ", ".join(s[:8] for s in self.report.affected_snapshots)
            self.report.errors.append(f"snapshots that cannot fully restore: {names}")

    def _tree_uses(self, tree_id: str, damaged: set[str], memo: dict[str, bool]) -> bool:
        if tree_id in memo:
            return memo[tree_id]
        if tree_id in damaged:
            memo[tree_id] = True
            return True
        try:
            nodes = self.repo.load_tree(tree_id)
        except SafeholdError:
            memo[tree_id] = True
            return True
        result = False
        for node in nodes:
            if node.content and any(blob in damaged for blob in node.content):
                result = True
                break
            if node.subtree and self._tree_uses(node.subtree, damaged, memo):
                result = True
                break
        memo[tree_id] = result
        return result
