"""Locks that keep protecting: the S3 Object Lock retention of everything the kept snapshots
need is pushed forward after every backup, copy and prune.

Deduplication makes a new snapshot reuse packs an old backup wrote; their retention was set
when they were written and runs out `object_lock_days` later, while the newest snapshot still
needs them. So after each of those operations `protect_kept_objects` extends the retention of
every object the repository's snapshots reference (their packs, the index files, the snapshot
files, the keys and the config) to at least `object_lock_days` (plus a slack, see
`backends.s3.lock_slack`) from now.

Incremental: a small JSON cache per repository (under SAFEHOLD_CACHE_DIR, else
$XDG_CACHE_HOME/safehold, else ~/.cache/safehold) remembers the retain-until of every object it
saw and the packs of every snapshot it walked. An object is touched only when its known date is
less than `days + slack/2` away (or it is new to the cache), so a daily backup sends a request
for a few objects, not for every pack. The cache is memory, not truth: `lock_status` reads
the dates from the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.backends.base import (
    ObjectNotFoundError,
    RetentionBackend,
    RetentionMode,
    retention_backend,
)
from safehold.backends.s3 import lock_slack
from safehold.errors import BackendError, SafeholdWarning
from safehold.repo.cachedir import cache_dir
from safehold.repo.format import FileType, object_name
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

CACHE_VERSION = 1
WORKERS = 8


class RetentionCache:
    """Known retain-until dates (object -> mode, date) and snapshot packs, of one repository."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.objects: dict[str, tuple[RetentionMode, datetime]] = {}
        self.snapshot_packs: dict[str, list[str]] = {}
        if path is not None:
            self._load(path)

    @classmethod
    def for_repository(
        cls, repo: Repository, environ: Mapping[str, str] = os.environ
    ) -> RetentionCache:
        return cls(cache_dir(environ) / "object-locks" / f"{repo.config.id}.json")

    def _load(self, path: Path) -> None:
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # no cache yet, or a damaged one: start over (it is only memory)
        if not isinstance(value, dict) or value.get("version") != CACHE_VERSION:
            return
        for name, entry in (value.get("objects") or {}).items():
            with contextlib.suppress(TypeError, ValueError, IndexError):
                mode, until = entry[0], datetime.fromisoformat(entry[1])
                if mode in ("GOVERNANCE", "COMPLIANCE") and until.tzinfo is not None:
                    self.objects[str(name)] = (mode, until)
        for snapshot_id, packs in (value.get("snapshots") or {}).items():
            if isinstance(packs, list):
                self.snapshot_packs[str(snapshot_id)] = [str(pack) for pack in packs]

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written is simply not kept."""
        if self.path is None:
            return
        document = {
            "version": CACHE_VERSION,
            "objects": {
                name: [mode, until.isoformat()] for name, (mode, until) in self.objects.items()
            },
            "snapshots": self.snapshot_packs,
        }
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
            try:
                with os.fdopen(handle, "w") as out:
                    json.dump(document, out)
                os.replace(temp, self.path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise


# ----- what the kept snapshots need ---------------------------------------------------------


def snapshot_packs(
    repo: Repository, snapshots: Iterable[Snapshot], cache: RetentionCache | None = None
) -> dict[str, set[str]]:
    """For each snapshot, the packs holding its trees and file contents (every copy of a
    blob). Snapshots the cache knows are not walked again while all their packs are indexed."""
    index = repo.index
    packs_of_tree: dict[str, frozenset[str]] = {}

    def blob_packs(blob_id: str) -> set[str]:
        return {location.pack_id for location in index.all_locations(blob_id)}

    def tree_packs(root: str) -> frozenset[str]:
        """Post-order without recursion (a deep folder tree must not overflow the stack):
        a tree's packs are known once those of all its subtrees are."""
        pending: dict[str, tuple[set[str], list[str]]] = {}
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            tree_id, expanded = stack.pop()
            if tree_id in packs_of_tree:
                continue
            if expanded:
                done, below = pending.pop(tree_id)
                for sub in below:
                    done |= packs_of_tree.get(sub, frozenset())
                packs_of_tree[tree_id] = frozenset(done)
                continue
            if tree_id in pending:
                continue  # already being expanded further down the stack
            packs = blob_packs(tree_id)
            subtrees: list[str] = []
            for node in repo.load_tree(tree_id):
                for blob_id in node.content or ():
                    packs |= blob_packs(blob_id)
                if node.subtree:
                    subtrees.append(node.subtree)
            pending[tree_id] = (packs, subtrees)
            stack.append((tree_id, True))
            stack.extend((sub, False) for sub in subtrees if sub not in packs_of_tree)
        return packs_of_tree[root]

    result: dict[str, set[str]] = {}
    for snapshot in snapshots:
        cached = cache.snapshot_packs.get(snapshot.id) if cache is not None else None
        if cached is not None and all(pack in index.packs for pack in cached):
            result[snapshot.id] = set(cached)
            continue
        result[snapshot.id] = set(tree_packs(snapshot.tree))
        if cache is not None:
            cache.snapshot_packs[snapshot.id] = sorted(result[snapshot.id])
    return result


def kept_objects(
    repo: Repository, snapshots: Iterable[Snapshot], cache: RetentionCache | None = None
) -> list[str]:
    """Every object the `snapshots` need to be restored: their packs, all index files, the
    snapshot files, the keys and the config (sorted names)."""
    chosen = list(snapshots)
    names = {"config"}
    names.update(object_name(FileType.KEY, key_id) for key_id in repo.list_ids(FileType.KEY))
    names.update(object_name(FileType.INDEX, idx) for idx in repo.list_ids(FileType.INDEX))
    names.update(object_name(FileType.SNAPSHOT, snapshot.id) for snapshot in chosen)
    for packs in snapshot_packs(repo, chosen, cache).values():
        names.update(object_name(FileType.PACK, pack_id) for pack_id in packs)
    return sorted(names)


# ----- extending ------------------------------------------------------------------------------


@dataclass
class LockReport:
    """What one extension pass did."""

    mode: RetentionMode
    days: float
    until: datetime  # every object handled is locked at least until here
    objects: int = 0  # objects the kept snapshots need
    extended: int = 0  # retention pushed forward (PutObjectRetention)
    looked_up: int = 0  # retention read from the server (new to the cache)
    missing: int = 0  # gone meanwhile (a concurrent prune): nothing to protect
    failed: list[str] = field(default_factory=list)  # "name: why", the extension was refused

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "days": self.days,
            "locked_until_at_least": self.until.isoformat(),
            "objects": self.objects,
            "extended": self.extended,
            "looked_up": self.looked_up,
            "missing": self.missing,
            "failed": self.failed,
        }

    def summary(self) -> str:
        text = (
            f"Object Lock: {self.objects} object(s) locked until at least "
            f"{self.until:%Y-%m-%d %H:%M} UTC ({self.mode.lower()}, {self.days:g} days); "
            f"extended {self.extended}"
        )
        if self.failed:
            text += f"; {len(self.failed)} could not be extended (first: {self.failed[0]})"
        return text


def _stronger(current: RetentionMode | None, wanted: RetentionMode) -> RetentionMode:
    """COMPLIANCE stays COMPLIANCE (S3 refuses to weaken it); else the policy's mode."""
    return "COMPLIANCE" if "COMPLIANCE" in (current, wanted) else "GOVERNANCE"


def extend_locks(
    backend: RetentionBackend,
    objects: Iterable[str],
    mode: RetentionMode,
    days: float,
    *,
    cache: RetentionCache | None = None,
    now: datetime | None = None,
    workers: int = WORKERS,
) -> LockReport:
    """Make every object in `objects` locked for at least `days` from now: each whose known
    retain-until is less than days + slack/2 away is pushed to days + slack. Requests run in
    a thread pool; only objects the cache does not know are looked up first."""
    now = now or datetime.now(UTC)
    slack = lock_slack(days)
    enough = now + timedelta(days=days) + slack / 2
    target = now + timedelta(days=days) + slack
    names = list(dict.fromkeys(objects))
    known = cache.objects if cache is not None else {}
    known.update(backend.written_retention())
    report = LockReport(mode, days, now + timedelta(days=days), objects=len(names))

    def handle(name: str) -> tuple[str, str, tuple[RetentionMode, datetime] | None]:
        """(name, outcome, new retention): outcome is ok/looked/extended/missing/failed:..."""
        entry = known.get(name)
        looked = False
        if entry is None:
            try:
                entry = backend.object_retention(name)
            except ObjectNotFoundError:
                return name, "missing", None
            except BackendError as err:
                return name, f"failed:{err.message}", None
            looked = True
        if entry is not None and entry[1] >= enough:
            return name, "looked" if looked else "ok", entry
        new_mode = _stronger(entry[0] if entry else None, mode)
        try:
            backend.extend_retention(name, new_mode, target)
        except ObjectNotFoundError:
            return name, "missing", None
        except BackendError as err:
            return name, f"failed:{err.message}", entry
        return name, "extended", (new_mode, target)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        outcomes = list(pool.map(handle, names))
    for name, outcome, entry in outcomes:
        if entry is not None and cache is not None:
            cache.objects[name] = entry
        if outcome == "missing":
            report.missing += 1
            if cache is not None:
                cache.objects.pop(name, None)
        elif outcome == "extended":
            report.extended += 1
        elif outcome == "looked":
            report.looked_up += 1
        elif outcome.startswith("failed:"):
            report.failed.append(f"{name}: {outcome[len('failed:') :]}")
    if cache is not None:
        wanted = set(names)
        for name in [n for n in cache.objects if n not in wanted]:
            del cache.objects[name]  # forgotten and pruned: no longer the cache's business
    return report


def protect_kept_objects(
    repo: Repository, environ: Mapping[str, str] = os.environ
) -> LockReport | None:
    """After a backup, copy or prune: extend the retention of everything the repository's
    snapshots need (None when the repository is not written under Object Lock)."""
    backend = retention_backend(repo.backend)
    if backend is None or backend.lock_retention is None:
        return None
    mode, days = backend.lock_retention
    cache = RetentionCache.for_repository(repo, environ)
    snapshots = repo.list_snapshots()
    objects = kept_objects(repo, snapshots, cache)
    live = {snapshot.id for snapshot in snapshots}
    cache.snapshot_packs = {k: v for k, v in cache.snapshot_packs.items() if k in live}
    report = extend_locks(backend, objects, mode, days, cache=cache)
    cache.save()
    if report.failed:
        warnings.warn(
            SafeholdWarning(
                f"{repo.backend.location}: the Object Lock retention of "
                f"{len(report.failed)} object(s) could not be extended, so they are not "
                f"protected for {days:g} days (first: {report.failed[0]})"
            ),
            stacklevel=2,
        )
    return report


# ----- status -----------------------------------------------------------------------------


@dataclass
class LockStatus:
    """The earliest retain-until among the objects of the newest snapshot, read from the
    server, against the policy (`days`)."""

    snapshot: Snapshot | None
    mode: RetentionMode | None
    days: float | None
    supported: bool = True  # False: not a storage with Object Lock (a local folder, SFTP)
    objects: int = 0
    earliest: datetime | None = None
    earliest_object: str = ""
    unlocked: list[str] = field(default_factory=list)  # objects with no retention at all
    errors: list[str] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def grace(self) -> timedelta:
        return lock_slack(self.days) if self.days else timedelta(0)

    @property
    def required(self) -> datetime | None:
        """The date the earliest retention must reach: `days` from now, less one slack
        (the time a backup's extension lasts beyond the policy: see lock_slack)."""
        if self.days is None:
            return None
        return self.now + timedelta(days=self.days) - self.grace

    @property
    def meets_policy(self) -> bool:
        if self.days is None or self.snapshot is None:
            return True  # no policy, or nothing to protect yet
        if self.unlocked or self.errors or self.earliest is None:
            return False
        required = self.required
        return required is not None and self.earliest >= required

    def problem(self) -> str:
        """Why the policy is not met ('' when it is)."""
        if self.meets_policy:
            return ""
        if self.errors:
            return f"could not read the retention of {len(self.errors)} object(s): {self.errors[0]}"
        if self.unlocked:
            return (
                f"{len(self.unlocked)} object(s) of the newest snapshot have no Object Lock "
                f"retention (first: {self.unlocked[0]})"
            )
        assert self.earliest is not None
        left = self.earliest - self.now
        return (
            f"the newest snapshot's {self.earliest_object} is locked only until "
            f"{self.earliest:%Y-%m-%d %H:%M} UTC ({left.total_seconds() / 86400:.1f} days), "
            f"below the policy's {self.days:g} days"
        )


def lock_status(
    repo: Repository,
    snapshot: Snapshot | None = None,
    *,
    cache: RetentionCache | None = None,
    workers: int = WORKERS,
) -> LockStatus:
    """Read the retention of every object `snapshot` (default: the newest) needs from the
    server. The cache only saves walking the snapshot's trees again, never a date."""
    backend = repo.backend if isinstance(repo.backend, RetentionBackend) else None
    lock = backend.lock_retention if backend is not None else None
    if snapshot is None:
        snapshots = repo.list_snapshots()
        snapshot = snapshots[-1] if snapshots else None
    newest = snapshot
    status = LockStatus(newest, lock[0] if lock else None, lock[1] if lock else None)
    status.supported = backend is not None
    if newest is None or backend is None:
        return status
    objects = kept_objects(repo, [newest], cache)
    status.objects = len(objects)

    def read(name: str) -> tuple[str, tuple[RetentionMode, datetime] | None, str]:
        try:
            return name, backend.object_retention(name), ""
        except BackendError as err:
            return name, None, err.message

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for name, entry, error in pool.map(read, objects):
            if error:
                status.errors.append(f"{name}: {error}")
            elif entry is None:
                status.unlocked.append(name)
            elif status.earliest is None or entry[1] < status.earliest:
                status.earliest, status.earliest_object = entry[1].astimezone(UTC), name
    return status
