"""The WAL chain from stored names: segments per timeline, gaps, and the recoverable window.

A base backup can be recovered to any moment from when it finished to the last segment that
follows it without a gap on its timeline (a timeline history file lets recovery go on into a
later timeline). Times of segments are when PostgreSQL handed them over: a segment holds
changes up to at most that moment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from safehold.pitr.store import StoredWal, WalArchive
from safehold.pitr.walnames import DEFAULT_SEGMENT_SIZE, Segment, parse_lsn, parse_wal_name
from safehold.repo.snapshot import BASEBACKUP_TAG, Snapshot


@dataclass(frozen=True)
class BaseBackup:
    """A base backup snapshot, as its `safehold.basebackup` field describes it."""

    snapshot: Snapshot
    source: str
    timeline: int
    start_lsn: int
    end_lsn: int
    started_at: float
    finished_at: float
    segment_size: int
    system_identifier: int | None

    @property
    def start_segment(self) -> Segment:
        return Segment(self.timeline, self.start_lsn // self.segment_size)

    @property
    def end_segment(self) -> Segment:
        return Segment(self.timeline, self.end_lsn // self.segment_size)

    @property
    def label(self) -> str:
        return self.snapshot.name or self.snapshot.short_id


def base_backup_of(snapshot: Snapshot) -> BaseBackup | None:
    info = snapshot.safehold.get("basebackup")
    if BASEBACKUP_TAG not in snapshot.tags or not isinstance(info, dict):
        return None
    try:
        return BaseBackup(
            snapshot, str(info["source"]), int(info["timeline"]), parse_lsn(info["start_lsn"]),
            parse_lsn(info["end_lsn"]), float(info["started_at"]), float(info["finished_at"]),
            int(info.get("segment_size") or DEFAULT_SEGMENT_SIZE), info.get("system_identifier"),
        )  # fmt: skip
    except (KeyError, ValueError, TypeError, Exception):
        return None


def base_backups(snapshots: list[Snapshot], source: str | None = None) -> list[BaseBackup]:
    """The base backups among `snapshots` (of `source`, when given), oldest first."""
    found = [backup for s in snapshots if (backup := base_backup_of(s)) is not None]
    return [b for b in found if source is None or b.source == source]


@dataclass
class Gap:
    timeline: int
    first_missing: str
    last_missing: str
    count: int


@dataclass
class TimelineChain:
    timeline: int
    segments: dict[int, StoredWal] = field(default_factory=dict)  # number -> file
    gaps: list[Gap] = field(default_factory=list)
    history: bool = False  # its .history file is archived

    @property
    def first(self) -> int:
        return min(self.segments)

    @property
    def last(self) -> int:
        return max(self.segments)

    def contiguous_from(self, number: int) -> int | None:
        """The last segment number reachable from `number` without a gap (None if even
        `number` is missing)."""
        if number not in self.segments:
            return None
        while number + 1 in self.segments:
            number += 1
        return number


@dataclass
class Window:
    """From `start` to `end` (epoch seconds) this base backup can be recovered to."""

    base: BaseBackup
    start: float
    end: float
    timeline: int
    last_segment: str


@dataclass
class ChainReport:
    segment_size: int
    timelines: dict[int, TimelineChain]
    windows: list[Window]
    base_backups: list[BaseBackup]
    newest_archived: float | None
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "segment_size": self.segment_size,
            "newest_archived": self.newest_archived,
            "timelines": [
                {
                    "timeline": chain.timeline,
                    "segments": len(chain.segments),
                    "first": chain.segments[chain.first].name if chain.segments else None,
                    "last": chain.segments[chain.last].name if chain.segments else None,
                    "newest_archived": max(
                        (s.archived_at for s in chain.segments.values()), default=None
                    ),
                    "history_file": chain.history,
                    "gaps": [gap.__dict__ for gap in chain.gaps],
                }
                for chain in self.timelines.values()
            ],
            "base_backups": [
                {
                    "snapshot_id": b.snapshot.id,
                    "name": b.snapshot.name,
                    "source": b.source,
                    "timeline": b.timeline,
                    "finished_at": b.finished_at,
                }
                for b in self.base_backups
            ],
            "windows": [
                {
                    "base_backup": w.base.snapshot.id,
                    "base_backup_name": w.base.snapshot.name,
                    "timeline": w.timeline,
                    "from": w.start,
                    "to": w.end,
                    "last_segment": w.last_segment,
                }
                for w in self.windows
            ],
            "problems": self.problems,
        }


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file: (parent timeline, LSN where the child branched off), oldest
    first. The last line is the direct parent."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            try:
                found.append((int(parts[0]), parse_lsn(parts[1])))
            except Exception:
                continue
    return found


def _children(archive: WalArchive) -> dict[int, list[tuple[int, int]]]:
    """parent timeline -> [(child timeline, switch LSN)] from the archived history files."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name, copies in archive.files.items():
        parsed = parse_wal_name(name)
        if parsed is None or parsed.kind != "history" or not copies[0].content:
            continue
        lines = parse_history(copies[0].content)
        if lines:
            parent, switch = lines[-1]
            children.setdefault(parent, []).append((parsed.timeline, switch))
    return children


def follow(
    timelines: dict[int, TimelineChain],
    children: dict[int, list[tuple[int, int]]],
    timeline: int,
    number: int,
    size: int,
) -> tuple[int, int] | None:
    """From segment `number` on `timeline`, the furthest (timeline, segment) recovery reaches
    without a gap, following promotions (the newest child timeline first, as
    recovery_target_timeline = 'latest' does). None when `number` itself is missing."""
    chain = timelines.get(timeline)
    last = chain.contiguous_from(number) if chain else None
    if last is None:
        return None
    for child, switch in sorted(children.get(timeline, []), reverse=True):
        first = switch // size  # the child starts with the segment holding the switch point
        if first < number or last < first - 1:
            continue
        reached = follow(timelines, children, child, first, size)
        if reached is not None:
            return reached
    return (timeline, last)


def segment_size_of(archive: WalArchive, bases: list[BaseBackup]) -> int:
    for copies in archive.files.values():
        if copies[0].segment_size:
            return int(copies[0].segment_size)
    return bases[0].segment_size if bases else DEFAULT_SEGMENT_SIZE


def build_chain(archive: WalArchive, bases: list[BaseBackup]) -> ChainReport:
    size = segment_size_of(archive, bases)
    timelines: dict[int, TimelineChain] = {}
    histories: set[int] = set()
    for name, copies in archive.files.items():
        parsed = parse_wal_name(name)
        if parsed is None:
            continue
        if parsed.kind == "history":
            histories.add(parsed.timeline)
        elif parsed.kind == "segment":
            chain = timelines.setdefault(parsed.timeline, TimelineChain(parsed.timeline))
            chain.segments[parsed.number(size)] = copies[0]
    for tli, chain in timelines.items():
        chain.history = tli in histories or tli == 1
        numbers = sorted(chain.segments)
        for before, after in itertools.pairwise(numbers):
            if after > before + 1:
                first = Segment(tli, before + 1).name(size)
                chain.gaps.append(
                    Gap(tli, first, Segment(tli, after - 1).name(size), after - before - 1)
                )
    problems: list[str] = []
    windows: list[Window] = []
    children = _children(archive)
    for base in bases:
        on_tl = timelines.get(base.timeline)
        last = on_tl.contiguous_from(base.start_segment.number) if on_tl else None
        reached = follow(timelines, children, base.timeline, base.start_segment.number, size)
        if on_tl is None or last is None or reached is None:
            problems.append(
                f"base backup {base.label}: its first WAL segment "
                f"{base.start_segment.name(size)} is not archived"
            )
            continue
        if last < base.end_segment.number:
            problems.append(
                f"base backup {base.label}: WAL up to {base.end_segment.name(size)} is needed to "
                f"make it consistent, the archive ends at {on_tl.segments[last].name}"
            )
            continue
        final_tl, final = reached
        newest = timelines[final_tl].segments[final]
        # consistent once the WAL up to its end point is replayed: pg_basebackup's stop closes
        # that segment itself, usually before the upload of the tar finished
        ready = on_tl.segments[base.end_segment.number].archived_at
        start = min(base.finished_at, max(ready, base.started_at))
        windows.append(Window(base, start, newest.archived_at, final_tl, newest.name))
    for chain in timelines.values():
        for gap in chain.gaps:
            problems.append(
                f"gap in the WAL of timeline {gap.timeline}: {gap.count} segment(s) missing, "
                f"{gap.first_missing} .. {gap.last_missing}"
            )
    return ChainReport(size, timelines, windows, bases, archive.newest_archived(), problems)
