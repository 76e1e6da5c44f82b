"""Property tests over random histories: safeguards, reasons, determinism, daily counts."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.policy.retention import (
    REASONS,
    Decision,
    RetentionPolicy,
    apply_retention,
    group_key,
)
from safehold.repo.gotypes import GoTime
from safehold.repo.snapshot import Snapshot

START_NS = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
TWO_YEARS_NS = 2 * 365 * 86_400 * 1_000_000_000
OFFSETS = [0, 3600, 7200, -5 * 3600, -4 * 3600, 19800, -12600, 14 * 3600, -11 * 3600]
SOURCES = ["files", "db", "uploads"]

counts = st.sampled_from([0, 0, 1, 2, 3, 5, 7, 30, -1])


@st.composite
def histories(draw: st.DrawFn, one_offset: bool = False) -> list[Snapshot]:
    size = draw(st.integers(min_value=1, max_value=40))
    offset = draw(st.sampled_from(OFFSETS))
    snapshots: list[Snapshot] = []
    times: list[int] = []
    for index in range(size):
        near: bool = draw(st.booleans())
        if times and near:  # near an earlier one: same hour, day, week ...
            ns = (
                draw(st.sampled_from(times))
                + draw(st.integers(min_value=-3 * 86_400, max_value=3 * 86_400)) * 1_000_000_000
            )
        else:
            ns = START_NS + draw(st.integers(min_value=0, max_value=TWO_YEARS_NS))
        times.append(ns)
        meta: dict[str, Any] = {}
        if draw(st.integers(0, 4)):  # mostly plan snapshots, some plain restic ones
            meta["app"] = draw(st.sampled_from(["shop", "blog"]))
            meta["env"] = draw(st.sampled_from(["prod", "staging"]))
            meta["reason"] = draw(st.sampled_from(REASONS))
            names = draw(st.lists(st.sampled_from(SOURCES), unique=True))
            meta["sources"] = {
                name: {"kind": "x", "failed": "boom"} if draw(st.integers(0, 4)) == 0 else {}
                for name in names
            }
            if draw(st.integers(0, 5)) == 0:
                meta["complete"] = False
            elif draw(st.booleans()):
                meta["complete"] = True
        snapshots.append(
            Snapshot(
                time=GoTime(ns, offset if one_offset else draw(st.sampled_from(OFFSETS))),
                tree="0" * 64,
                paths=draw(st.sampled_from([["/a"], ["/a", "/b"], ["/b", "/a"]])),
                hostname=draw(st.sampled_from(["h1", "h2"])),
                tags=draw(st.lists(st.sampled_from(["x", "y", "z"]), unique=True)),
                safehold=meta,
                id=f"{index:064x}",
            )
        )
    return snapshots


policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
    keep_reason=st.dictionaries(st.sampled_from(REASONS), counts, max_size=3),
    keep_tags=st.lists(st.sampled_from(["x", "y", "x,y", "z,y"]), max_size=2),
)


def _complete(snapshot: Snapshot) -> bool:
    """A full backup: complete and not evidence (evidence never stands in for a backup)."""
    sources = snapshot.safehold.get("sources", {})
    if snapshot.safehold.get("reason") == "evidence":
        return False
    return snapshot.safehold.get("complete", True) and not any(
        manifest.get("failed") for manifest in sources.values()
    )


def _groups(snapshots: list[Snapshot]) -> dict[tuple[str, ...], list[Snapshot]]:
    groups: dict[tuple[str, ...], list[Snapshot]] = defaultdict(list)
    for snapshot in snapshots:
        groups[group_key(snapshot)].append(snapshot)
    return groups


def _keep(decisions: list[Decision]) -> dict[str, bool]:
    return {decision.snapshot.id: decision.keep for decision in decisions}


@settings(max_examples=150, deadline=None)
@given(histories(), policies)
def test_safeguards_and_reasons(snapshots: list[Snapshot], policy: RetentionPolicy) -> None:
    decisions = apply_retention(snapshots, policy)
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snapshots)
    keep = _keep(decisions)
    # (3) kept <=> at least one reason.
    for decision in decisions:
        assert decision.keep == bool(decision.reasons)
    for members in _groups(snapshots).values():
        # (1) the newest of each group is kept (ties: some snapshot of that instant).
        newest = max(s.time.ns for s in members)
        assert any(keep[s.id] for s in members if s.time.ns == newest)
        # (2) the newest complete snapshot holding each source (not failed) is kept.
        for source in SOURCES:
            good = [
                s
                for s in members
                if _complete(s)
                and source in s.safehold.get("sources", {})
                and not s.safehold["sources"][source].get("failed")
            ]
            if good:
                best = max(s.time.ns for s in good)
                assert any(keep[s.id] for s in good if s.time.ns == best)


@settings(max_examples=100, deadline=None)
@given(histories(), policies, st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_input_order(
    snapshots: list[Snapshot], policy: RetentionPolicy, rng: Any
) -> None:
    # (4)
    first = apply_retention(snapshots, policy)
    shuffled = snapshots[:]
    rng.shuffle(shuffled)
    second = apply_retention(shuffled, policy)
    assert [(d.snapshot.id, d.keep, d.reasons, d.group) for d in first] == [
        (d.snapshot.id, d.keep, d.reasons, d.group) for d in second
    ]
    # Within a group, decisions are newest first.
    for a, b in itertools.pairwise(first):
        if a.group == b.group:
            assert a.snapshot.time.ns >= b.snapshot.time.ns


@settings(max_examples=150, deadline=None)
@given(histories(one_offset=True), st.sampled_from([1, 2, 3, 7, 30, -1]))
def test_keep_daily_keeps_one_per_distinct_day(snapshots: list[Snapshot], n: int) -> None:
    # (5) with one offset, local time is monotonic, so days are buckets exactly.
    decisions = apply_retention(snapshots, RetentionPolicy(keep_daily=n))
    for key, members in _groups(snapshots).items():
        in_group = [d for d in decisions if group_key(d.snapshot) == key]
        days: dict[str, int] = {}
        for s in members:
            if _complete(s):
                local = datetime.fromtimestamp(s.time.ns // 10**9 + s.time.offset, UTC).date()
                days[local.isoformat()] = max(days.get(local.isoformat(), s.time.ns), s.time.ns)
        daily = [d for d in in_group if any(r.startswith("daily snapshot") for r in d.reasons)]
        expected = len(days) if n == -1 else min(n, len(days))
        assert len(daily) == expected
        # ... and they are the newest snapshot of each of the newest days.
        newest_days = sorted(days, reverse=True)[:expected]
        assert sorted(d.snapshot.time.ns for d in daily) == sorted(days[x] for x in newest_days)
        # Nothing else is kept but the safeguards.
        for decision in in_group:
            if decision.keep and decision not in daily:
                assert all(
                    r == "newest snapshot" or r.startswith("newest good backup of source")
                    for r in decision.reasons
                )
