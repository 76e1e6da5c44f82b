"""kept_objects: exactly what the kept snapshots need, computed once per tree, from the cache
while the packs it names are still indexed (repo/objectlock.py)."""

from __future__ import annotations

import os
from pathlib import Path

from safehold.app.backup import BackupRequest, run_backup
from safehold.backends.local import LocalBackend
from safehold.repo.format import FileType, object_name
from safehold.repo.key import KdfParams
from safehold.repo.objectlock import RetentionCache, kept_objects, snapshot_packs
from safehold.repo.repository import Repository
from safehold.repo.walk import collect_used_blobs

FAST = KdfParams(n=1024, r=8, p=1)


def _expected_packs(repo: Repository, tree: str) -> set[str]:
    trees, data = collect_used_blobs(repo, [tree])
    return {
        location.pack_id for blob in trees | data for location in repo.index.all_locations(blob)
    }


def test_kept_objects_are_what_the_snapshots_need(tmp_path: Path) -> None:
    source = tmp_path / "src"
    deep = source.joinpath(*[f"d{number}" for number in range(40)])  # a deep folder tree
    deep.mkdir(parents=True)
    (deep / "leaf.bin").write_bytes(os.urandom(50_000))
    (source / "top.bin").write_bytes(os.urandom(2_000_000))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=FAST)
    first = run_backup(repo, BackupRequest([str(source)], [], "manual", None)).snapshot
    (source / "second.bin").write_bytes(os.urandom(300_000))
    second = run_backup(repo, BackupRequest([str(source)], [], "manual", None)).snapshot
    repo = Repository.open(LocalBackend(tmp_path / "repo"), b"pw")

    names = kept_objects(repo, [second])
    packs = {name.rsplit("/", 1)[1] for name in names if name.startswith("data/")}
    assert packs == _expected_packs(repo, second.tree)
    assert object_name(FileType.SNAPSHOT, second.id) in names
    assert object_name(FileType.SNAPSHOT, first.id) not in names  # not asked for
    assert "config" in names
    assert {n for n in names if n.startswith("keys/")} == {
        f"keys/{k}" for k in repo.list_ids(FileType.KEY)
    }
    assert {n for n in names if n.startswith("index/")} == {
        f"index/{i}" for i in repo.list_ids(FileType.INDEX)
    }
    both = kept_objects(repo, [first, second])
    assert object_name(FileType.SNAPSHOT, first.id) in both
    both_packs = {name.rsplit("/", 1)[1] for name in both if name.startswith("data/")}
    assert both_packs == _expected_packs(repo, first.tree) | packs

    # The cache remembers each snapshot's packs; a cached entry naming a pack the index no
    # longer has (repacked away) is walked again, never trusted.
    cache = RetentionCache(tmp_path / "cache.json")
    assert snapshot_packs(repo, [second], cache)[second.id] == packs
    cache.save()
    again = RetentionCache(tmp_path / "cache.json")
    assert set(again.snapshot_packs[second.id]) == packs
    again.snapshot_packs[second.id] = [*again.snapshot_packs[second.id][:1], "f" * 64]
    assert snapshot_packs(repo, [second], again)[second.id] == packs
    assert set(again.snapshot_packs[second.id]) == packs

    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    assert RetentionCache(damaged).objects == {}  # a damaged cache is only forgotten memory
