"""app/forget.py: the plan of a forget (named or by policy), holds, only-copy marking, removal."""

from __future__ import annotations

import os

import pytest

from safehold.app.forget import (
    mark_only_copies,
    plan_named_forget,
    plan_policy_forget,
    remove_snapshots,
)
from safehold.app.holds import hold_snapshot
from safehold.backends.memory import MemoryBackend
from safehold.errors import SnapshotNotFoundError
from safehold.policy.retention import RetentionPolicy
from safehold.repo.clock import Host
from safehold.repo.gotypes import GoTime
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

HOST = Host("test-host", "tester", 1000, 1000, os.getpid())


@pytest.fixture
def repo() -> Repository:
    return Repository.init(
        MemoryBackend("forget"), b"pw", kdf=KdfParams(n=1024, r=8, p=1), host=HOST
    )


def _snapshot(repo: Repository, seconds: int, name: str) -> Snapshot:
    snapshot = Snapshot(
        time=GoTime(1_700_000_000 * 10**9 + seconds * 10**9, 0),
        tree="00" * 32,
        paths=["/data"],
        safehold={"name": name},
    )
    repo.save_snapshot(snapshot)
    return snapshot


def test_named_forget_keeps_held_and_lists_what_stays(repo: Repository) -> None:
    old, held, new = (_snapshot(repo, i, f"s{i}") for i in (1, 2, 3))
    hold_snapshot(repo, held, "audit")
    plan = plan_named_forget(repo, [old.id[:8], "s2"])
    assert [s.id for s in plan.doomed] == [old.id]
    assert {s.id for s in plan.kept} == {held.id, new.id}
    assert plan.lines[0].startswith(f"REMOVE {old.short_id}")
    assert "held: audit" in plan.lines[1]
    assert plan.decisions[1] == {"id": held.id, "keep": True, "reasons": ["held: audit"]}
    assert remove_snapshots(repo, plan) == []
    assert [s.id for s in repo.list_snapshots()] == [held.id, new.id]


def test_named_forget_of_unknown_snapshot_fails(repo: Repository) -> None:
    _snapshot(repo, 1, "s1")
    with pytest.raises(SnapshotNotFoundError):
        plan_named_forget(repo, ["deadbeef"])


def test_policy_forget_and_only_copies(repo: Repository) -> None:
    snaps = [_snapshot(repo, i, f"s{i}") for i in range(4)]
    plan = plan_policy_forget(repo, RetentionPolicy(keep_last=2), None)
    assert {s.id for s in plan.doomed} == {snaps[0].id, snaps[1].id}
    assert len(plan.decisions) == 4 and plan.count == 2
    mark_only_copies(plan, lambda doomed: {snaps[0].id})
    assert [s.id for s in plan.only_here] == [snaps[1].id]
    mark_only_copies(plan, None)  # no way to ask: nothing marked
    assert plan.only_here == []
