"""`same_snapshot`: the one "is this the same backup?" test (restic's similarSnapshots)."""

from __future__ import annotations

import dataclasses

import pytest

from safehold.repo.gotypes import GoTime
from safehold.repo.snapshot import Snapshot, same_snapshot


def _snapshot(**changes: object) -> Snapshot:
    base = Snapshot(
        time=GoTime(1_700_000_000_123_456_789, 3600),
        tree="a" * 64,
        paths=["/srv/app", "/etc/app"],
        hostname="db1",
        username="backup",
        uid=998,
        gid=998,
        excludes=["*.tmp", "cache/"],
        tags=["nightly", "app:shop"],
        id="1" * 64,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_copy_is_the_same_snapshot() -> None:
    original = _snapshot()
    copy = _snapshot(id="2" * 64, parent=None, original=original.id)
    assert same_snapshot(copy, original)
    assert same_snapshot(original, copy)


def test_ignored_fields() -> None:
    original = _snapshot(parent="3" * 64)
    other = _snapshot(
        id="4" * 64,
        parent="5" * 64,
        original="6" * 64,
        safehold={"name": "shop-prod-x", "complete": False},
        extra={"program_version": "restic 0.17.0"},
        time=GoTime(original.time.ns, 0),  # the same instant, printed in another zone
    )
    assert same_snapshot(original, other)


def test_paths_and_tags_in_any_order_excludes_in_order() -> None:
    original = _snapshot()
    assert same_snapshot(original, _snapshot(paths=["/etc/app", "/srv/app"]))
    assert same_snapshot(original, _snapshot(tags=["app:shop", "nightly"]))
    assert not same_snapshot(original, _snapshot(excludes=["cache/", "*.tmp"]))
    assert not same_snapshot(_snapshot(paths=["/a", "/a"]), _snapshot(paths=["/a", "/b"]))
    assert not same_snapshot(_snapshot(paths=["/a", "/b"]), _snapshot(paths=["/a", "/a"]))


@pytest.mark.parametrize(
    "change",
    [
        {"tree": "b" * 64},
        {"time": GoTime(1_700_000_000_123_456_790, 3600)},
        {"hostname": "db2"},
        {"username": "root"},
        {"uid": 0},
        {"gid": 0},
        {"paths": ["/srv/app"]},
        {"paths": ["/srv/app", "/etc/app", "/var/app"]},
        {"tags": ["nightly"]},
        {"tags": ["nightly", "app:shop", "extra"]},
        {"excludes": ["*.tmp"]},
    ],
)
def test_every_compared_field_counts(change: dict[str, object]) -> None:
    assert not same_snapshot(_snapshot(), _snapshot(id="7" * 64, **change))


def test_a_rewrite_naming_the_snapshot_as_original_is_not_the_same() -> None:
    """The case the old "held elsewhere" check of forget got wrong: it counted any snapshot
    whose `original` named ours as a copy. restic `rewrite --exclude` writes such a snapshot
    with a smaller tree, so the other destination does NOT hold everything ours holds, and
    forgetting ours would have dropped the only full copy without --force."""
    ours = _snapshot()
    rewritten = _snapshot(id="8" * 64, original=ours.id, tree="c" * 64)
    assert not same_snapshot(ours, rewritten)


def test_same_time_tree_and_paths_from_another_host_is_not_the_same() -> None:
    """The old check also ignored host, user and tags: two hosts' backups of identical
    content at the same instant were counted as copies of each other."""
    assert not same_snapshot(_snapshot(), _snapshot(id="9" * 64, hostname="db2"))
