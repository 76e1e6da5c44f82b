"""Retention: which snapshots `forget` keeps, and why — restic's `forget` policy, plus safeguards.

Pure: no I/O and no clock. Everything relative is measured from the newest snapshot of a group
(as restic does), so the result depends on the snapshots alone, never on when it runs.

What mirrors restic 0.14's `ApplyPolicy` exactly (checked against restic itself in
tests/policy/test_restic_oracle.py):

* Snapshots are grouped (see `group_key`) and the policy is applied to each group on its own.
* Within a group snapshots are walked newest → oldest. Each counting rule (`keep_last`,
  `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`) remembers the
  bucket value of the last snapshot it kept; a snapshot whose bucket differs from that value
  is kept by the rule while the rule's count lasts, and the count goes down by one. The buckets
  are `YYYYMMDDHH`, `YYYYMMDD`, ISO year + ISO week, `YYYYMM` and `YYYY` of the snapshot's time
  *in its own UTC offset* (a snapshot taken at 00:30+02:00 belongs to that day, whatever the
  UTC date); `keep_last`'s bucket is unique per snapshot. As in restic the comparison is with
  the *last kept* bucket value only, not with every bucket seen, which matters only when
  offsets change so that local times are not monotonic.
* `keep_within` keeps every snapshot strictly newer than (newest snapshot of the group − the
  duration). restic measures from the newest snapshot, not from now, so old repositories that
  stopped receiving backups are not emptied by time passing. (restic subtracts calendar
  days in the zone of the newest snapshot; we subtract an exact duration. They differ only by
  a DST hour when restic runs in a zone with DST and the window crosses a change.)
* `keep_tags`: each entry is a comma-separated tag list as in `restic forget --keep-tag a,b`; a
  snapshot carrying every tag of any entry is kept and does not use up any counter.
* A policy with no rule at all keeps everything ("policy is empty"), as restic does.

Not mirrored: restic ≥ 0.17 also keeps the oldest snapshot when a rule's count is not used up
("oldest daily snapshot"); restic's `--keep-within-daily` etc. are not offered. A plan writes
`keep_within` in safehold's duration syntax (`30d`, `2w`, `12h`; `m` is minutes, not restic's
months).

safehold's additions:

* `-1` means "unlimited" for every count (as newer restic accepts): the rule keeps the newest
  snapshot of every bucket. Other negative numbers are rejected.
* `keep_reason`: `{"predeploy": 5}` keeps the newest 5 snapshots whose `safehold.reason` is
  `predeploy` (each counts on its own, like `keep_last` restricted to that reason).
* Held snapshots (`safehold hold`, and every evidence/incident snapshot) are always kept,
  "held: <why>"; `forget` never removes them, whatever the flags.
* Only full backups (`repo/snapshot.py` `is_full_backup`: complete, not `evidence`, and with
  a plan known, holding every plan source) occupy a counting rule's bucket or count and the
  "newest good backup" safeguard; `keep_reason` counts any complete snapshot of its reason.
  Incomplete snapshots (`safehold.complete` false, or any source with `failed`), evidence and
  single-source snapshots never occupy a bucket or a count: the counting rules skip them, so
  the daily snapshot of a day is the newest *full* one of that day and a failed run never
  pushes a good backup out. They are still kept by `keep_within`, `keep_tags` and the
  newest-snapshot safeguard.
  Plain restic snapshots (no `safehold` field) are complete, so they behave as in restic.
* Point-in-time base backups (`is_base_backup`) of a plan form a group of their own, under
  the same policy, so that they never push a dump out of its daily/weekly slot.
* Safeguards, reported as reasons and never overridable by a policy:
  "newest snapshot" — the newest snapshot of each group is always kept;
  "newest good backup of source X" — for each source name found in a group, the newest
  full backup that contains it (without `failed`) is always kept; with a plan that is the
  newest complete backup of the whole plan.

Ties (snapshots with the very same time) are ordered by id, then content, so the result is
deterministic and independent of the input order (restic's sort is not stable there).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from safehold.policy.duration import DurationError, format_duration, parse_duration
from safehold.repo.gotypes import format_time
from safehold.repo.snapshot import Snapshot, is_base_backup, is_complete, is_full_backup

# The documented reasons a safehold snapshot is taken for (README "Reasons"). The list is open:
# any word matching REASON_PATTERN is a reason (`valid_reason`); these are the ones safehold
# itself uses or that schedules and runbooks are expected to use.
REASONS = (
    "daily", "hourly", "weekly", "monthly", "manual", "predeploy", "premigration", "evidence",
    "incident",
)  # fmt: skip
REASON_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")


def reason_problem(reason: object) -> str | None:
    """Why `reason` is not a valid reason (one line), or None when it is one."""
    if isinstance(reason, str) and REASON_PATTERN.fullmatch(reason):
        return None
    return (
        f"invalid reason {reason!r}: a reason is a lowercase word of up to 32 letters, digits "
        f"or dashes, starting with a letter (e.g. {', '.join(REASONS[:4])}, incident)"
    )


UNLIMITED = -1

_COUNT_KEYS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
_ALL_KEYS = (*_COUNT_KEYS, "keep_within", "keep_reason", "keep_tags")

NEWEST_SNAPSHOT = "newest snapshot"
POLICY_IS_EMPTY = "policy is empty"


@dataclass(frozen=True)
class RetentionPolicy:
    """What `forget` keeps. Counts: 0 = rule off, -1 = unlimited. See the module docstring."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None
    keep_reason: Mapping[str, int] = field(default_factory=dict, hash=False)
    keep_tags: Sequence[str] = ()

    def __post_init__(self) -> None:
        for key in _COUNT_KEYS:
            _check_count(key, getattr(self, key))
        if self.keep_within is not None:
            if not isinstance(self.keep_within, timedelta):
                raise ValueError(f"keep_within: expected a duration, got {self.keep_within!r}")
            if self.keep_within < timedelta(0):
                raise ValueError("keep_within: a duration cannot be negative")
            if self.keep_within == timedelta(0):
                object.__setattr__(self, "keep_within", None)
        reasons: dict[str, int] = {}
        for reason, count in dict(self.keep_reason).items():
            _check_reason(reason)
            _check_count(f"keep_reason.{reason}", count)
            if count:
                reasons[reason] = count
        object.__setattr__(self, "keep_reason", MappingProxyType(reasons))
        if isinstance(self.keep_tags, str):
            raise ValueError("keep_tags: expected a list of tags, got a single string")
        tags = tuple(self.keep_tags)
        for tag in tags:
            if not isinstance(tag, str) or not _tag_list(tag):
                raise ValueError(f"keep_tags: expected non-empty tag names, got {tag!r}")
        object.__setattr__(self, "keep_tags", tags)

    @property
    def empty(self) -> bool:
        """True when no rule is set: restic then keeps every snapshot."""
        return (
            not any(getattr(self, key) for key in _COUNT_KEYS)
            and self.keep_within is None
            and not self.keep_reason
            and not self.keep_tags
        )

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> RetentionPolicy:
        """A plan's `[retention]` table as a policy; ValueError naming the key on bad input.

        An empty table means the defaults (`DEFAULT_POLICY`). A non-empty table is the whole
        policy, like restic's flags: rules it does not mention are off.
        """
        if not isinstance(table, Mapping):
            raise ValueError(f"retention: expected a table, got {type(table).__name__}")
        unknown = sorted(str(key) for key in table if key not in _ALL_KEYS)
        if unknown:
            raise ValueError(
                f"retention: unknown key {unknown[0]!r} (expected one of: {', '.join(_ALL_KEYS)})"
            )
        if not table:
            return DEFAULT_POLICY
        counts = {key: _count_value(f"retention.{key}", table.get(key, 0)) for key in _COUNT_KEYS}
        within = _within_value(table.get("keep_within"))
        reasons_table = table.get("keep_reason", {})
        if not isinstance(reasons_table, Mapping):
            raise ValueError(
                "retention.keep_reason: expected a table of reason = count, like "
                f"predeploy = 5, got {reasons_table!r}"
            )
        reasons: dict[str, int] = {}
        for reason, count in reasons_table.items():
            try:
                _check_reason(reason)
            except ValueError as err:
                raise ValueError(f"retention.{err}") from None
            reasons[reason] = _count_value(f"retention.keep_reason.{reason}", count)
        tags = table.get("keep_tags", [])
        if not isinstance(tags, list) or not all(
            isinstance(tag, str) and _tag_list(tag) for tag in tags
        ):
            raise ValueError(
                f'retention.keep_tags: expected a list of tag names, like ["release"], got {tags!r}'
            )
        return cls(
            keep_last=counts["keep_last"],
            keep_hourly=counts["keep_hourly"],
            keep_daily=counts["keep_daily"],
            keep_weekly=counts["keep_weekly"],
            keep_monthly=counts["keep_monthly"],
            keep_yearly=counts["keep_yearly"],
            keep_within=within,
            keep_reason=reasons,
            keep_tags=tags,
        )


def from_mapping(table: Mapping[str, Any]) -> RetentionPolicy:
    """Module-level spelling of `RetentionPolicy.from_mapping`."""
    return RetentionPolicy.from_mapping(table)


def _check_count(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED:
        raise ValueError(f"{key}: expected a whole number (0 = off, -1 = unlimited), got {value!r}")


def _count_value(key: str, value: object) -> int:
    _check_count(key, value)
    assert isinstance(value, int)
    return value


def _check_reason(reason: object) -> None:
    problem = reason_problem(reason)
    if problem is not None:
        raise ValueError(f"keep_reason: {problem}")


def _within_value(value: object) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value if value > timedelta(0) else None
    if not isinstance(value, str):
        raise ValueError(
            f'retention.keep_within: expected a duration like "30d" or "12h", got {value!r}'
        )
    try:
        duration = parse_duration(value)
    except DurationError as err:
        raise ValueError(
            f'retention.keep_within: expected a duration like "30d" or "12h" ({err}), got {value!r}'
        ) from None
    return duration if duration > timedelta(0) else None


def _tag_list(entry: str) -> frozenset[str]:
    return frozenset(tag.strip() for tag in entry.split(",") if tag.strip())


# 7 daily, 4 weekly, 3 monthly, and the last 5 predeploy snapshots.
DEFAULT_POLICY = RetentionPolicy(
    keep_daily=7, keep_weekly=4, keep_monthly=3, keep_reason={"predeploy": 5}
)


# --- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether one snapshot is kept and every rule or safeguard that keeps it."""

    snapshot: Snapshot
    keep: bool
    reasons: list[str]
    group: str = ""


GroupKey = tuple[str, ...]


def group_key(snapshot: Snapshot) -> GroupKey:
    """(app, env) for safehold plan snapshots; else (hostname, sorted paths), restic's default
    `--group-by host,paths`. The first element says which kind of key it is."""
    meta = snapshot.safehold
    if meta.get("app") is not None and is_base_backup(snapshot):
        # point-in-time base backups are a series of their own: they never take a dump's
        # daily/weekly slot, and the WAL archive keeps what the kept ones need
        return ("app", str(meta.get("app")), str(meta.get("env") or ""), "basebackups")
    if meta.get("app") is not None:
        return ("app", str(meta.get("app")), str(meta.get("env") or ""))
    return ("host", snapshot.hostname, *sorted(snapshot.paths))


def _group_label(key: GroupKey) -> str:
    if key[0] == "app":
        return f"app={key[1]} env={key[2]}" + (" (base backups)" if len(key) > 3 else "")
    return f"host={key[1]} paths=[{', '.join(key[2:])}]"


def _sources(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    sources = snapshot.safehold.get("sources")
    if not isinstance(sources, Mapping):
        return {}
    return {
        str(name): dict(manifest) if isinstance(manifest, Mapping) else {}
        for name, manifest in sources.items()
    }


def _order_key(snapshot: Snapshot) -> tuple[int, str, bytes]:
    return (snapshot.time.ns, snapshot.id, snapshot.encode())


def _local(snapshot: Snapshot) -> datetime:
    seconds = snapshot.time.ns // 1_000_000_000 + snapshot.time.offset
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def _hourly(snapshot: Snapshot, _nr: int) -> int:
    d = _local(snapshot)
    return d.year * 1_000_000 + d.month * 10_000 + d.day * 100 + d.hour


def _daily(snapshot: Snapshot, _nr: int) -> int:
    d = _local(snapshot)
    return d.year * 10_000 + d.month * 100 + d.day


def _weekly(snapshot: Snapshot, _nr: int) -> int:
    year, week, _ = _local(snapshot).isocalendar()
    return year * 100 + week


def _monthly(snapshot: Snapshot, _nr: int) -> int:
    d = _local(snapshot)
    return d.year * 100 + d.month


def _yearly(snapshot: Snapshot, _nr: int) -> int:
    return _local(snapshot).year


def _always(_snapshot: Snapshot, nr: int) -> int:
    return nr


@dataclass
class _Counter:
    label: str
    total: int
    bucket: Callable[[Snapshot, int], int]
    last: int = -1
    used: int = 0

    def offer(self, snapshot: Snapshot, nr: int) -> str | None:
        if self.total != UNLIMITED and self.used >= self.total:
            return None
        value = self.bucket(snapshot, nr)
        if value == self.last:
            return None
        self.last = value
        self.used += 1
        if self.total == UNLIMITED:
            return f"{self.label} ({self.used})"
        return f"{self.label} ({self.used} of {self.total})"


@dataclass(frozen=True)
class PlanScope:
    """The plan whose group (app, env) retention judges with the whole-plan rule: a snapshot
    counts as a backup only when it holds every one of `sources` (`is_full_backup`)."""

    app: str
    env: str
    sources: frozenset[str]


def held_reason(why: str) -> str:
    return f"held: {why}"


def _decide_group(
    snapshots: list[Snapshot],
    policy: RetentionPolicy,
    label: str,
    plan_sources: frozenset[str] | None = None,
    holds: Mapping[str, str] | None = None,
) -> list[Decision]:
    ordered = sorted(snapshots, key=_order_key, reverse=True)
    reasons: list[list[str]] = [[] for _ in ordered]
    counters = [
        _Counter("last snapshot", policy.keep_last, _always),
        _Counter("hourly snapshot", policy.keep_hourly, _hourly),
        _Counter("daily snapshot", policy.keep_daily, _daily),
        _Counter("weekly snapshot", policy.keep_weekly, _weekly),
        _Counter("monthly snapshot", policy.keep_monthly, _monthly),
        _Counter("yearly snapshot", policy.keep_yearly, _yearly),
    ]
    counters = [counter for counter in counters if counter.total]
    reason_left = dict(policy.keep_reason)
    tag_lists = [(entry, _tag_list(entry)) for entry in policy.keep_tags]
    newest_ns = ordered[0].time.ns
    within_ns = None
    if policy.keep_within is not None:
        delta = policy.keep_within
        seconds = delta.days * 86_400 + delta.seconds
        within_ns = seconds * 1_000_000_000 + delta.microseconds * 1000
    complete = [is_full_backup(snapshot, plan_sources) for snapshot in ordered]
    held = holds or {}

    for nr, snapshot in enumerate(ordered):
        why = reasons[nr]
        if snapshot.id in held:
            why.append(held_reason(held[snapshot.id]))
        if policy.empty:
            why.append(POLICY_IS_EMPTY)
        tags = set(snapshot.tags)
        for entry, wanted in tag_lists:
            if wanted <= tags:
                why.append(f"tag pinned ({entry})")
        if within_ns is not None and snapshot.time.ns > newest_ns - within_ns:
            assert policy.keep_within is not None
            why.append(f"within {format_duration(policy.keep_within)}")
        if complete[nr]:
            for counter in counters:
                kept = counter.offer(snapshot, nr)
                if kept:
                    why.append(kept)
        reason = snapshot.reason
        if (
            is_complete(snapshot)
            and reason is not None
            and reason in reason_left
            and reason_left[reason] != 0
        ):
            if reason_left[reason] > 0:
                reason_left[reason] -= 1
            count = policy.keep_reason[reason]
            why.append(f"every {reason}" if count == UNLIMITED else f"last {count} {reason}")

    # Safeguards.
    reasons[0].append(NEWEST_SNAPSHOT)
    covered: set[str] = set()
    for nr, snapshot in enumerate(ordered):
        if not complete[nr]:
            continue
        for name, manifest in sorted(_sources(snapshot).items()):
            if name not in covered and not manifest.get("failed"):
                covered.add(name)
                reasons[nr].append(f"newest good backup of source {name}")

    return [
        Decision(snapshot, bool(why), why, label)
        for snapshot, why in zip(ordered, reasons, strict=True)
    ]


def apply_retention(
    snapshots: Iterable[Snapshot],
    policy: RetentionPolicy,
    *,
    plan: PlanScope | None = None,
    holds: Mapping[str, str] | None = None,
) -> list[Decision]:
    """A decision for every snapshot: groups in key order, newest first within each group.

    `plan`: in that plan's group only full backups of every plan source count (module
    docstring). `holds`: snapshot id -> why; a held snapshot is kept, "held: <why>"."""
    groups: dict[GroupKey, list[Snapshot]] = {}
    for snapshot in snapshots:
        groups.setdefault(group_key(snapshot), []).append(snapshot)
    decisions: list[Decision] = []
    for key in sorted(groups):
        scope = plan.sources if plan is not None and key == ("app", plan.app, plan.env) else None
        decisions.extend(_decide_group(groups[key], policy, _group_label(key), scope, holds))
    return decisions


def explain(decisions: Iterable[Decision]) -> list[str]:
    """Lines for `forget --dry-run`: `KEEP   <id> <name> <time>  <reasons>` / `REMOVE <id> ...`.

    With more than one group, each group starts with a `[group]` line."""
    decisions = list(decisions)
    several = len({decision.group for decision in decisions}) > 1
    lines: list[str] = []
    group: str | None = None
    for decision in decisions:
        if several and decision.group != group:
            group = decision.group
            lines.append(f"[{group}]")
        snapshot = decision.snapshot
        verb = "KEEP" if decision.keep else "REMOVE"
        line = (
            f"{verb:<6} {snapshot.short_id or '-'} {snapshot.name or '-'} "
            f"{format_time(snapshot.time)}"
        )
        if decision.reasons:
            line += "  " + ", ".join(decision.reasons)
        lines.append(line)
    return lines
