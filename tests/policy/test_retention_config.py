"""`[retention]` tables: parsing and the errors people see."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from typing import Any

import pytest

from safehold.policy import retention
from safehold.policy.retention import DEFAULT_POLICY, RetentionPolicy, from_mapping


def test_a_full_table() -> None:
    table = tomllib.loads(
        """
        [retention]
        keep_last = 2
        keep_hourly = 24
        keep_daily = 7
        keep_weekly = 4
        keep_monthly = 12
        keep_yearly = -1
        keep_within = "30d"
        keep_tags = ["release", "audit,q4"]
        [retention.keep_reason]
        predeploy = 5
        evidence = -1
        """
    )["retention"]
    policy = from_mapping(table)
    assert policy == RetentionPolicy(
        keep_last=2,
        keep_hourly=24,
        keep_daily=7,
        keep_weekly=4,
        keep_monthly=12,
        keep_yearly=-1,
        keep_within=timedelta(days=30),
        keep_reason={"predeploy": 5, "evidence": -1},
        keep_tags=("release", "audit,q4"),
    )
    assert RetentionPolicy.from_mapping(table) == policy


def test_empty_table_means_defaults_and_a_partial_table_is_the_whole_policy() -> None:
    assert from_mapping({}) is DEFAULT_POLICY
    assert from_mapping({"keep_daily": 3}) == RetentionPolicy(keep_daily=3)
    assert from_mapping({"keep_within": "0d"}).empty
    assert from_mapping({"keep_within": "1w2d12h"}).keep_within == timedelta(days=9, hours=12)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"keep_dialy": 7}, "retention: unknown key 'keep_dialy' (expected one of: keep_last"),
        ({"keep_daily": "7"}, "retention.keep_daily: expected a whole number (0 = off, -1 ="),
        ({"keep_daily": 7.0}, "retention.keep_daily: expected a whole number"),
        ({"keep_daily": True}, "retention.keep_daily: expected a whole number"),
        ({"keep_weekly": -2}, "retention.keep_weekly: expected a whole number"),
        ({"keep_within": 30}, 'retention.keep_within: expected a duration like "30d"'),
        ({"keep_within": "30 days"}, 'unknown unit "days"'),
        ({"keep_within": "-3d"}, "cannot be negative"),
        ({"keep_reason": 5}, "retention.keep_reason: expected a table of reason = count"),
        ({"keep_reason": {"Deploy!": 5}}, "retention.keep_reason: invalid reason 'Deploy!'"),
        ({"keep_reason": {"predeploy": "5"}}, "retention.keep_reason.predeploy: expected a whole"),
        ({"keep_tags": "release"}, "retention.keep_tags: expected a list of tag names"),
        ({"keep_tags": ["release", ""]}, "retention.keep_tags: expected a list of tag names"),
    ],
)
def test_errors_name_the_key_and_what_was_expected(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        from_mapping(table)
    assert message in str(caught.value)


def test_not_a_table() -> None:
    with pytest.raises(ValueError, match="retention: expected a table, got list"):
        from_mapping([])  # type: ignore[arg-type]


def test_the_dataclass_checks_itself() -> None:
    with pytest.raises(ValueError, match="keep_last"):
        RetentionPolicy(keep_last=-5)
    with pytest.raises(ValueError, match="keep_within"):
        RetentionPolicy(keep_within=timedelta(days=-1))
    with pytest.raises(ValueError, match="keep_reason"):
        RetentionPolicy(keep_reason={"No pe": 1})  # any lowercase word is a reason
    with pytest.raises(ValueError, match="keep_tags"):
        RetentionPolicy(keep_tags="release")
    policy = RetentionPolicy(keep_reason={"predeploy": 0}, keep_within=timedelta(0))
    assert policy.empty
    assert policy.keep_within is None
    assert dict(policy.keep_reason) == {}
    with pytest.raises(TypeError):
        policy.keep_reason["predeploy"] = 3  # type: ignore[index]
    assert isinstance(hash(DEFAULT_POLICY), int)  # usable as a dict key


def test_reasons_match_the_backup_command() -> None:
    from safehold.app.backup import REASONS

    assert retention.REASONS == REASONS
