"""Hand-checked retention cases: buckets, ISO weeks, offsets, reasons, tags, groups, safeguards."""

from __future__ import annotations

import random
from datetime import timedelta

from safehold.policy.retention import (
    DEFAULT_POLICY,
    RetentionPolicy,
    apply_retention,
    explain,
)
from tests.policy.retention_helpers import by_id, days, kept_ids, snap

DWM = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=3)


def test_thirty_daily_snapshots_with_7_daily_4_weekly_3_monthly() -> None:
    # 2024-01-01 is a Monday (ISO 2024-W01); the newest, Jan 30, is a Tuesday of W05.
    history = [snap(t) for t in days("2024-01-01", 30)]
    decisions = apply_retention(history, DWM)
    assert [d.snapshot.id[:10] for d in decisions if d.keep] == [
        "2024-01-30", "2024-01-29", "2024-01-28", "2024-01-27", "2024-01-26", "2024-01-25",
        "2024-01-24",  # daily 1..7
        "2024-01-21", "2024-01-14",  # weekly 3 and 4: the Sundays ending W03 and W02
    ]  # fmt: skip
    reasons = by_id(decisions)
    assert reasons["2024-01-30T03:00:00Z"].reasons == [
        "daily snapshot (1 of 7)",
        "weekly snapshot (1 of 4)",
        "monthly snapshot (1 of 3)",
        "newest snapshot",
    ]
    assert reasons["2024-01-28T03:00:00Z"].reasons == [
        "daily snapshot (3 of 7)",
        "weekly snapshot (2 of 4)",
    ]
    assert reasons["2024-01-14T03:00:00Z"].reasons == ["weekly snapshot (4 of 4)"]
    assert reasons["2024-01-13T03:00:00Z"].keep is False
    assert reasons["2024-01-13T03:00:00Z"].reasons == []
    assert len(decisions) == 30


def test_thirty_days_across_new_year_uses_months_and_iso_weeks() -> None:
    # 2023-12-15 .. 2024-01-13. Jan 13 is a Saturday of 2024-W02; Jan 7 ends 2024-W01;
    # Dec 31 2023 (a Sunday) ends 2023-W52; Dec 24 ends 2023-W51.
    history = [snap(t) for t in days("2023-12-15", 30)]
    decisions = apply_retention(history, DWM)
    assert [i[:10] for i in kept_ids(decisions)] == [
        "2024-01-13", "2024-01-12", "2024-01-11", "2024-01-10", "2024-01-09", "2024-01-08",
        "2024-01-07", "2023-12-31", "2023-12-24",
    ]  # fmt: skip
    assert by_id(decisions)["2023-12-31T03:00:00Z"].reasons == [
        "weekly snapshot (3 of 4)",
        "monthly snapshot (2 of 3)",
    ]


def test_iso_week_belongs_to_the_iso_year_around_new_year() -> None:
    # Mon 2024-12-30 and Tue 2024-12-31 are in 2025-W01, with Wed 2025-01-01 and Sun 2025-01-05.
    # Fri 2021-01-01 .. Sun 2021-01-03 are in 2020-W53, with Mon 2020-12-28.
    stamps = [
        "2025-01-06T12:00:00Z",  # 2025-W02
        "2025-01-05T12:00:00Z",  # 2025-W01 (newest of the week)
        "2025-01-01T12:00:00Z",
        "2024-12-31T12:00:00Z",
        "2024-12-30T12:00:00Z",
        "2024-12-29T12:00:00Z",  # 2024-W52
        "2021-01-03T12:00:00Z",  # 2020-W53
        "2021-01-01T12:00:00Z",
        "2020-12-28T12:00:00Z",
        "2020-12-27T12:00:00Z",  # 2020-W52
    ]
    decisions = apply_retention([snap(t) for t in stamps], RetentionPolicy(keep_weekly=10))
    assert kept_ids(decisions) == [
        "2025-01-06T12:00:00Z",
        "2025-01-05T12:00:00Z",
        "2024-12-29T12:00:00Z",
        "2021-01-03T12:00:00Z",
        "2020-12-27T12:00:00Z",
    ]


def test_days_are_the_snapshots_own_local_days_across_dst() -> None:
    # Europe/Berlin went from +01:00 to +02:00 on 2024-03-31 at 02:00.
    a = "2024-03-31T00:30:00+01:00"  # 2024-03-30T23:30Z, local Mar 31
    b = "2024-03-31T23:30:00+02:00"  # 2024-03-31T21:30Z, local Mar 31
    c = "2024-04-01T00:30:00+02:00"  # 2024-03-31T22:30Z: UTC Mar 31, local Apr 1
    d = "2024-03-30T23:45:00+01:00"  # 2024-03-30T22:45Z, local Mar 30
    decisions = apply_retention([snap(t) for t in (a, b, c, d)], RetentionPolicy(keep_daily=10))
    assert kept_ids(decisions) == [c, b, d]  # in UTC days it would have been c and a
    assert [x.snapshot.id for x in decisions] == [c, b, a, d]


def test_hours_repeated_by_the_dst_fall_back_share_one_hourly_bucket() -> None:
    # 2024-10-27 in Berlin: 02:00-03:00 happens twice (+02:00, then +01:00). Like restic, the
    # bucket is the local wall-clock hour, so all four land in 2024-10-27 02h.
    stamps = [
        "2024-10-27T02:15:00+02:00",
        "2024-10-27T02:45:00+02:00",
        "2024-10-27T02:15:00+01:00",
        "2024-10-27T02:45:00+01:00",
        "2024-10-27T03:15:00+01:00",
    ]
    decisions = apply_retention([snap(t) for t in stamps], RetentionPolicy(keep_hourly=10))
    assert kept_ids(decisions) == ["2024-10-27T03:15:00+01:00", "2024-10-27T02:45:00+01:00"]


def test_several_snapshots_in_a_day_keep_the_newest_of_the_day() -> None:
    stamps = [
        f"2024-05-{day:02d}T{hour:02d}:{minute:02d}:00Z"
        for day in (1, 2, 3)
        for hour in (1, 9, 17, 23)
        for minute in (0, 59)
    ]
    decisions = apply_retention([snap(t) for t in stamps], RetentionPolicy(keep_daily=2))
    assert kept_ids(decisions) == ["2024-05-03T23:59:00Z", "2024-05-02T23:59:00Z"]
    hourly = apply_retention([snap(t) for t in stamps], RetentionPolicy(keep_hourly=5))
    assert kept_ids(hourly) == [
        "2024-05-03T23:59:00Z",
        "2024-05-03T17:59:00Z",
        "2024-05-03T09:59:00Z",
        "2024-05-03T01:59:00Z",
        "2024-05-02T23:59:00Z",
    ]


def test_keep_last_monthly_yearly_and_unlimited() -> None:
    history = [snap(t) for t in days("2021-11-20", 800)]
    decisions = apply_retention(history, RetentionPolicy(keep_last=2, keep_yearly=-1))
    assert [i[:10] for i in kept_ids(decisions)] == [
        "2024-01-28", "2024-01-27", "2023-12-31", "2022-12-31", "2021-12-31",
    ]  # fmt: skip
    reasons = by_id(decisions)
    assert reasons["2024-01-28T03:00:00Z"].reasons == [
        "last snapshot (1 of 2)",
        "yearly snapshot (1)",
        "newest snapshot",
    ]
    assert reasons["2021-12-31T03:00:00Z"].reasons == ["yearly snapshot (4)"]
    monthly = apply_retention(history, RetentionPolicy(keep_monthly=-1))
    assert len(kept_ids(monthly)) == 27  # 2021-11 .. 2024-01


def test_keep_reason_keeps_the_last_n_of_that_reason() -> None:
    history = [snap(t, reason="daily", app="shop") for t in days("2024-02-01", 20)]
    history += [
        snap(t, reason="predeploy", app="shop") for t in days("2024-02-01", 20, at="15:00:00Z")
    ][::3]  # predeploys on Feb 1, 4, 7, 10, 13, 16, 19
    history.append(snap("2024-02-18T16:00:00Z", reason="manual", app="shop"))
    policy = RetentionPolicy(keep_reason={"predeploy": 3})
    decisions = apply_retention(history, policy)
    assert kept_ids(decisions) == [
        "2024-02-20T03:00:00Z",  # newest snapshot
        "2024-02-19T15:00:00Z",
        "2024-02-16T15:00:00Z",
        "2024-02-13T15:00:00Z",
    ]
    assert by_id(decisions)["2024-02-16T15:00:00Z"].reasons == ["last 3 predeploy"]
    assert by_id(decisions)["2024-02-20T03:00:00Z"].reasons == ["newest snapshot"]

    everything = apply_retention(history, RetentionPolicy(keep_reason={"predeploy": -1}))
    assert len(kept_ids(everything)) == 1 + 7
    assert by_id(everything)["2024-02-01T15:00:00Z"].reasons == ["every predeploy"]


def test_default_policy() -> None:
    assert (
        RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=3, keep_reason={"predeploy": 5})
        == DEFAULT_POLICY
    )
    history = [snap(t, reason="daily", app="shop") for t in days("2024-01-01", 120)]
    history += [
        snap(t, reason="predeploy", app="shop")
        for t in days("2024-01-01", 120, at="12:00:00Z")[::10]
    ]
    decisions = apply_retention(history, DEFAULT_POLICY)
    kept = kept_ids(decisions)
    # Newest: Apr 29 (Mon, W18). Predeploys at noon on Jan 1, 11, ... Apr 20 (newest five:
    # Apr 20, 10, Mar 31, 21, 11). Apr 20 (Sat) is the newest of its day; Apr 21 is W16's
    # Sunday.
    assert kept == [
        "2024-04-29T03:00:00Z", "2024-04-28T03:00:00Z", "2024-04-27T03:00:00Z",
        "2024-04-26T03:00:00Z", "2024-04-25T03:00:00Z", "2024-04-24T03:00:00Z",
        "2024-04-23T03:00:00Z",  # daily 1..7
        "2024-04-21T03:00:00Z",  # weekly 3 (W16)
        "2024-04-20T12:00:00Z",  # predeploy
        "2024-04-14T03:00:00Z",  # weekly 4 (W15)
        "2024-04-10T12:00:00Z",  # predeploy
        "2024-03-31T12:00:00Z",  # monthly 2 and predeploy (newest of March)
        "2024-03-21T12:00:00Z", "2024-03-11T12:00:00Z",  # predeploy
        "2024-02-29T03:00:00Z",  # monthly 3
    ]  # fmt: skip
    assert by_id(decisions)["2024-03-31T12:00:00Z"].reasons == [
        "monthly snapshot (2 of 3)",
        "last 5 predeploy",
    ]


def test_keep_within_is_measured_from_the_newest_snapshot_not_now() -> None:
    history = [snap(t) for t in days("2019-06-01", 10)]  # long ago: "now" must not matter
    policy = RetentionPolicy(keep_within=timedelta(days=3))
    decisions = apply_retention(history, policy)
    # Strictly newer than newest - 3d: Jun 10, 9, 8; Jun 7 is exactly 3 days older.
    assert kept_ids(decisions) == [
        "2019-06-10T03:00:00Z",
        "2019-06-09T03:00:00Z",
        "2019-06-08T03:00:00Z",
    ]
    assert by_id(decisions)["2019-06-09T03:00:00Z"].reasons == ["within 3d"]
    longer = apply_retention(history, RetentionPolicy(keep_within=timedelta(days=3, seconds=1)))
    assert len(kept_ids(longer)) == 4


def test_keep_tags_pin_snapshots_without_using_counters() -> None:
    history = [snap(t) for t in days("2024-01-01", 10)]
    history.append(snap("2023-05-05T10:00:00Z", tags=["release", "v1"]))
    history.append(snap("2023-05-04T10:00:00Z", tags=["release"]))
    history.append(snap("2023-05-03T10:00:00Z", tags=["v1"]))
    decisions = apply_retention(history, RetentionPolicy(keep_daily=2, keep_tags=["v1,release"]))
    assert kept_ids(decisions) == [
        "2024-01-10T03:00:00Z",
        "2024-01-09T03:00:00Z",
        "2023-05-05T10:00:00Z",
    ]
    assert by_id(decisions)["2023-05-05T10:00:00Z"].reasons == ["tag pinned (v1,release)"]
    either = apply_retention(history, RetentionPolicy(keep_tags=["release", "v1"]))
    assert kept_ids(either) == [
        "2024-01-10T03:00:00Z",
        "2023-05-05T10:00:00Z",
        "2023-05-04T10:00:00Z",
        "2023-05-03T10:00:00Z",
    ]
    assert by_id(either)["2023-05-05T10:00:00Z"].reasons == [
        "tag pinned (release)",
        "tag pinned (v1)",
    ]


def test_groups_by_app_and_env_else_host_and_sorted_paths() -> None:
    history = [snap(t, app="shop", env="prod", reason="daily") for t in days("2024-01-01", 5)]
    history += [snap(t, app="shop", env="staging", reason="daily") for t in days("2024-01-03", 5)]
    history += [snap(t, app="blog", env="prod", reason="daily") for t in days("2023-01-01", 5)]
    # Plain restic snapshots: same host and the same paths in another order = one group.
    history.append(snap("2024-03-01T00:00:00Z", host="web", paths=["/b", "/a"]))
    history.append(snap("2024-03-02T00:00:00Z", host="web", paths=["/a", "/b"]))
    history.append(snap("2024-03-03T00:00:00Z", host="db", paths=["/a", "/b"]))
    decisions = apply_retention(history, RetentionPolicy(keep_last=1))
    assert [(d.group, d.snapshot.id[:10]) for d in decisions if d.keep] == [
        ("app=blog env=prod", "2023-01-05"),
        ("app=shop env=prod", "2024-01-05"),
        ("app=shop env=staging", "2024-01-07"),
        ("host=db paths=[/a, /b]", "2024-03-03"),
        ("host=web paths=[/a, /b]", "2024-03-02"),
    ]
    assert len(decisions) == len(history)


def test_newest_good_backup_of_each_source_is_never_removed() -> None:
    ok = {"kind": "files"}
    failed = {"kind": "postgres", "failed": "connection refused"}
    history = [
        snap("2024-06-01T03:00:00Z", app="shop", sources={"files": ok, "db": {"kind": "pg"}}),
        snap("2024-06-02T03:00:00Z", app="shop", sources={"files": ok, "db": {"kind": "pg"}}),
        # db failed two nights running; the last night was marked incomplete without sources.
        snap("2024-06-03T03:00:00Z", app="shop", sources={"files": ok, "db": failed}),
        snap("2024-06-04T03:00:00Z", app="shop", sources={"files": ok, "db": failed}),
        snap("2024-06-05T03:00:00Z", app="shop", complete=False, sources={"files": ok}),
        # The old plan had an "uploads" source; the newest good one of it is from May.
        snap("2024-05-01T03:00:00Z", app="shop", sources={"uploads": ok}),
        snap("2024-04-01T03:00:00Z", app="shop", sources={"uploads": ok}),
    ]
    decisions = apply_retention(history, RetentionPolicy(keep_within=timedelta(hours=36)))
    assert [(d.snapshot.id[:10], d.reasons) for d in decisions if d.keep] == [
        ("2024-06-05", ["within 1d12h", "newest snapshot"]),
        ("2024-06-04", ["within 1d12h"]),
        ("2024-06-02", ["newest good backup of source db", "newest good backup of source files"]),
        ("2024-05-01", ["newest good backup of source uploads"]),
    ]


def test_incomplete_snapshots_do_not_take_buckets() -> None:
    failed = {"db": {"failed": "boom"}}
    history = [
        snap("2024-06-03T20:00:00Z", app="shop", sources=failed),  # newer, but incomplete
        snap("2024-06-03T03:00:00Z", app="shop", sources={"db": {}}),
        snap("2024-06-02T20:00:00Z", app="shop", complete=False),
        snap("2024-06-02T03:00:00Z", app="shop"),
        snap("2024-06-01T03:00:00Z", app="shop"),
    ]
    decisions = apply_retention(history, RetentionPolicy(keep_daily=2, keep_last=1))
    assert [(d.snapshot.id, d.reasons) for d in decisions if d.keep] == [
        ("2024-06-03T20:00:00Z", ["newest snapshot"]),
        (
            "2024-06-03T03:00:00Z",
            [
                "last snapshot (1 of 1)",
                "daily snapshot (1 of 2)",
                "newest good backup of source db",
            ],
        ),
        ("2024-06-02T03:00:00Z", ["daily snapshot (2 of 2)"]),
    ]


def test_an_empty_policy_keeps_everything_as_restic_does() -> None:
    history = [snap(t) for t in days("2024-01-01", 3)]
    decisions = apply_retention(history, RetentionPolicy())
    assert all(d.keep for d in decisions)
    assert decisions[1].reasons == ["policy is empty"]
    assert apply_retention([], DEFAULT_POLICY) == []


def test_ties_are_ordered_by_id_whatever_the_input_order() -> None:
    history = [snap("2024-01-01T00:00:00Z", sid=f"{n:064x}") for n in range(6)]
    expected = [d.snapshot.id for d in apply_retention(history, RetentionPolicy(keep_last=2))]
    assert expected == [f"{n:064x}" for n in reversed(range(6))]
    for seed in range(5):
        shuffled = history[:]
        random.Random(seed).shuffle(shuffled)
        decisions = apply_retention(shuffled, RetentionPolicy(keep_last=2))
        assert [d.snapshot.id for d in decisions] == expected
        assert kept_ids(decisions) == expected[:2]


def test_explain_lines() -> None:
    history = [
        snap("2024-01-02T03:00:00+01:00", sid="a" * 64, app="shop", reason="daily"),
        snap("2024-01-01T03:00:00+01:00", sid="b" * 64, app="shop", reason="daily"),
        snap("2023-12-01T03:00:00Z", sid="c" * 64, app="shop", reason="daily"),
    ]
    lines = explain(apply_retention(history, RetentionPolicy(keep_daily=2)))
    assert lines == [
        "KEEP   aaaaaaaa shop-prod-2024-01-02-daily 2024-01-02T03:00:00+01:00  "
        "daily snapshot (1 of 2), newest snapshot",
        "KEEP   bbbbbbbb shop-prod-2024-01-01-daily 2024-01-01T03:00:00+01:00  "
        "daily snapshot (2 of 2)",
        "REMOVE cccccccc shop-prod-2023-12-01-daily 2023-12-01T03:00:00Z",
    ]
    two_groups = [*history, snap("2024-01-01T00:00:00Z", sid="d" * 64)]
    lines = explain(apply_retention(two_groups, RetentionPolicy(keep_daily=2)))
    assert lines[0] == "[app=shop env=prod]"
    assert lines[4] == "[host=host paths=[/data]]"
    assert lines[5].startswith("KEEP   dddddddd - 2024-01-01T00:00:00Z  ")
