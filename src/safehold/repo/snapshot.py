"""Snapshots: `snapshots/<id>` points at a root tree and says when, where and what.

restic's fields are kept as restic writes them. safehold's own metadata lives in one extra
field, `safehold` (restic ignores unknown fields): the snapshot's name, the reason it was taken,
and whether every source made it in (`complete`) — see docs/format.md.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from safehold.repo.format import encode_json
from safehold.repo.gotypes import GoTime, format_time, parse_time

_KNOWN_FIELDS = {
    "time", "parent", "tree", "paths", "hostname", "username", "uid", "gid", "excludes",
    "tags", "original", "safehold",
}  # fmt: skip


@dataclass
class Snapshot:
    time: GoTime
    tree: str
    paths: list[str]
    hostname: str = ""
    username: str = ""
    uid: int = 0
    gid: int = 0
    parent: str | None = None
    excludes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    original: str | None = None
    safehold: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # the storage id; set when loaded or saved, not serialised

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def name(self) -> str | None:
        value = self.safehold.get("name")
        return str(value) if value else None

    @property
    def reason(self) -> str | None:
        value = self.safehold.get("reason")
        return str(value) if value else None

    @property
    def complete(self) -> bool:
        return bool(self.safehold.get("complete", True))

    def encode(self) -> bytes:
        value: dict[str, Any] = {"time": format_time(self.time)}
        if self.parent:
            value["parent"] = self.parent
        value["tree"] = self.tree
        value["paths"] = self.paths
        if self.hostname:
            value["hostname"] = self.hostname
        if self.username:
            value["username"] = self.username
        if self.uid:
            value["uid"] = self.uid
        if self.gid:
            value["gid"] = self.gid
        if self.excludes:
            value["excludes"] = self.excludes
        if self.tags:
            value["tags"] = self.tags
        if self.original:
            value["original"] = self.original
        if self.safehold:
            value["safehold"] = self.safehold
        value.update(self.extra)
        return encode_json(value)

    @classmethod
    def decode(cls, raw: bytes, snapshot_id: str = "") -> Snapshot:
        value = json.loads(raw)
        return cls(
            time=parse_time(value["time"]),
            tree=str(value["tree"]),
            paths=[str(path) for path in value.get("paths") or []],
            hostname=str(value.get("hostname") or ""),
            username=str(value.get("username") or ""),
            uid=int(value.get("uid") or 0),
            gid=int(value.get("gid") or 0),
            parent=value.get("parent") or None,
            excludes=list(value.get("excludes") or []),
            tags=list(value.get("tags") or []),
            original=value.get("original") or None,
            safehold=dict(value.get("safehold") or {}),
            extra={k: v for k, v in value.items() if k not in _KNOWN_FIELDS},
            id=snapshot_id,
        )


def same_snapshot(a: Snapshot, b: Snapshot) -> bool:
    """Whether `a` and `b` are the same backup, wherever each is stored: restic's
    `similarSnapshots` (cmd/restic/cmd_copy.go), the one test used by copy (skip what the
    target already has), forget (is a snapshot held elsewhere?) and status (does a destination
    hold the newest backup?).

    Compared: `tree`, `time` (to the nanosecond), `hostname`, `username`, `uid`, `gid`,
    `paths` and `tags` (in any order; restic compares lengths and membership, here sorted
    lists, the same but symmetric when a list repeats an entry) and `excludes` (in order).
    Ignored: the storage id, `parent` (a copy drops it), `original` (a copy sets it), and
    safehold's own `safehold` field and unknown fields, which restic does not compare
    either. A snapshot that names another as its `original` but differs in a compared field
    (restic `rewrite` and `tag` set `original` too) is NOT the same: a rewrite that excluded
    files does not hold the data the original holds."""
    return (
        a.tree == b.tree
        and a.time.ns == b.time.ns
        and a.hostname == b.hostname
        and a.username == b.username
        and a.uid == b.uid
        and a.gid == b.gid
        and sorted(a.paths) == sorted(b.paths)
        and sorted(a.tags) == sorted(b.tags)
        and a.excludes == b.excludes
    )


# --- what a snapshot is a backup of: the one rule (README "What `latest` means") --------------

WAL_TAG = "safehold-wal"  # a batch of archived WAL files (point-in-time recovery), not a backup
BASEBACKUP_TAG = "safehold-basebackup"  # a PostgreSQL base backup (pg_basebackup's tar)
BASEBACKUP_REASON = "basebackup"


def is_base_backup(snapshot: Snapshot) -> bool:
    """Whether `snapshot` is a point-in-time recovery base backup."""
    return BASEBACKUP_TAG in snapshot.tags


def is_wal_batch(snapshot: Snapshot) -> bool:
    """Whether `snapshot` holds archived PostgreSQL WAL files rather than a backup."""
    return WAL_TAG in snapshot.tags


EVIDENCE = "evidence"  # the reason of the snapshot of live data taken before a restore over it


def good_sources(snapshot: Snapshot) -> set[str]:
    """The plan sources this snapshot holds a good backup of (manifest present, not failed)."""
    manifests = snapshot.safehold.get("sources") or {}
    if not isinstance(manifests, dict):
        return set()
    return {
        str(name)
        for name, manifest in manifests.items()
        if isinstance(manifest, dict) and not manifest.get("failed")
    }


def is_complete(snapshot: Snapshot) -> bool:
    """Complete = the snapshot says so and none of its sources failed. Says nothing about
    WHICH sources it holds: see `is_full_backup`."""
    if not snapshot.complete:
        return False
    manifests = snapshot.safehold.get("sources") or {}
    if not isinstance(manifests, dict):
        return True
    return not any(isinstance(m, dict) and m.get("failed") for m in manifests.values())


def is_full_backup(snapshot: Snapshot, plan_sources: Collection[str] | None = None) -> bool:
    """Whether `snapshot` is a full backup of the plan whose sources are `plan_sources`: every
    one of them present and not failed, the snapshot complete, and its reason not `evidence`
    (an evidence snapshot holds the live data a restore was about to overwrite, usually of one
    source). This is what `latest`, the drill's choice and retention's "newest complete
    backup" mean; partial, single-source and evidence snapshots never stand in for it.

    `plan_sources` None (no plan known, e.g. `forget -r` on a bare repository): the snapshot's
    own word (complete, not evidence) is taken. A plain restic snapshot is complete."""
    if snapshot.reason == EVIDENCE or not is_complete(snapshot):
        return False
    return plan_sources is None or set(plan_sources) <= good_sources(snapshot)


def is_good_backup_of(snapshot: Snapshot, source: str) -> bool:
    """Whether `snapshot` holds a good backup of `source` that stands for it: present, not
    failed, and not an evidence snapshot. A partial or single-source backup counts for the
    sources it holds: `restore latest --source X` and the freshness of X use this."""
    return snapshot.reason != EVIDENCE and source in good_sources(snapshot)
