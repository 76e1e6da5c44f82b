from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safehold.plan import DurationError, format_duration, parse_duration
from safehold.policy.duration import parse_moment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the duration is empty"),
        ("   ", "the duration is empty"),
        ("-1h", "a duration cannot be negative"),
        ("5y", 'unknown unit "y"'),
        ("90", "90 has no unit (like 90m)"),
        ("1.5h", "use whole numbers, like 90m instead of 1.5h"),
        ("soon", '"soon" is not whole numbers followed by units'),
        ("h1", '"h1" is not whole numbers followed by units'),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=24), "1d"),
        (timedelta(days=14), "2w"),
        (timedelta(days=10, seconds=1), "10d1s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(timedelta(seconds=-1))


@given(st.integers(min_value=0, max_value=10**9))
def test_round_trip_from_seconds(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.lists(st.tuples(st.integers(0, 10**5), st.sampled_from("smhdw")), min_size=1))
def test_round_trip_from_text(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in parts)
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value
    assert format_duration(parse_duration(format_duration(value))) == format_duration(value)


NOW = datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-2h", NOW - timedelta(hours=2)),
        ("-1d12h", NOW - timedelta(days=1, hours=12)),
        ("90m ago", NOW - timedelta(minutes=90)),
        ("2026-12-07T01:30:00+01:00", NOW - timedelta(hours=2, minutes=30)),
        ("2026-12-07 02:15Z", NOW - timedelta(minutes=45)),
        ("2026-12-07T02:59:59.5+00:00", NOW - timedelta(seconds=0.5)),
    ],
)
def test_parse_moment(text: str, expected: datetime) -> None:
    moment = parse_moment(text, NOW)
    assert moment == expected and moment.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("yesterday", "neither an ISO time nor a duration"),
        ("2026-12-07T01:30:00", "no UTC offset; add one, like 2026-12-07T01:30:00+00:00"),
        ("2026-12-07", "like 2026-12-07T00:00+00:00"),
        ("-2", "has no unit"),
        ("-1.5h", "whole numbers"),
        ("--2h", "negative"),
    ],
)
def test_parse_moment_refuses_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=re.escape(message)):
        parse_moment(text, NOW)
