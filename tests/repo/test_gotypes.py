"""Go's strconv.Quote, RFC3339Nano times and os.FileMode as restic writes them."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repo.gotypes import (
    GoTime,
    format_time,
    go_mode_from_stat,
    go_quote,
    go_unquote,
    parse_time,
    posix_permissions_from_go_mode,
)

NS = 1_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Local (wall clock) seconds of 0001-01-01T00:00:00 and 9999-12-31T23:59:59.
MIN_LOCAL_S = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(seconds=1)
MAX_LOCAL_S = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - EPOCH) // timedelta(seconds=1)

# ----- strconv.Quote ------------------------------------------------------------------------

# Outputs of Go's strconv.Quote (without the surrounding double quotes).
KNOWN_QUOTES = [
    (b"plain.txt", "plain.txt"),
    (b"", ""),
    (b"with space", "with space"),
    (b"new\nline", "new\\nline"),
    (b"bad\xffname", "bad\\xffname"),
    ("é".encode(), "é"),
    ("日本語".encode(), "日本語"),
    ("\U0001f600".encode(), "\U0001f600"),
    ("\u00a0".encode(), "\\u00a0"),
    ("\u3000".encode(), "\\u3000"),
    ("\u0085".encode(), "\\u0085"),
    ("\u200b".encode(), "\\u200b"),
    ("\U000e0001".encode(), "\\U000e0001"),
    (b"\x7f", "\\x7f"),
    (b"\x00", "\\x00"),
    (b"\x1b[0m", "\\x1b[0m"),
    (b"\x07\x08\x0c\r\t\x0b", "\\a\\b\\f\\r\\t\\v"),
    (b"back\\slash", "back\\\\slash"),
    (b'say "hi"', 'say \\"hi\\"'),
    (b"it's", "it's"),
    (b"\xc3", "\\xc3"),  # truncated UTF-8 sequence
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # UTF-8-encoded surrogate: invalid in Go
    (b"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"),  # beyond U+10FFFF
    (b"\xc0\xaf", "\\xc0\\xaf"),  # overlong encoding of '/'
    ("a\ufffdb".encode(), "a\ufffdb"),  # a real U+FFFD is printable and kept
]


@pytest.mark.parametrize(("raw", "quoted"), KNOWN_QUOTES)
def test_go_quote_matches_go(raw: bytes, quoted: str) -> None:
    assert go_quote(raw) == quoted
    assert go_unquote(quoted) == raw


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_quote_round_trips_arbitrary_bytes(raw: bytes) -> None:
    quoted = go_quote(raw)
    assert go_unquote(quoted) == raw


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_quote_output_is_clean_unicode(raw: bytes) -> None:
    quoted = go_quote(raw)
    # Strict encoding fails on a leaked lone surrogate, which JSON could not carry.
    quoted.encode("utf-8")
    assert all(char.isprintable() for char in quoted)
    # Every backslash and double quote of the output starts or is part of an escape.
    assert '"' not in quoted.replace('\\"', "").replace("\\\\", "")


@settings(deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters='\\"'), max_size=50))
def test_printable_text_is_kept_verbatim(text: str) -> None:
    quoted = go_quote(text.encode("utf-8"))
    if text.isprintable():
        assert quoted == text
    assert go_unquote(quoted) == text.encode("utf-8")


def test_unquote_accepts_other_go_escapes() -> None:
    assert go_unquote("\\377") == b"\xff"
    assert go_unquote("\\u00e9") == "é".encode()
    assert go_unquote("\\U0001F600") == "\U0001f600".encode()
    assert go_unquote("\\'") == b"'"


@pytest.mark.parametrize("bad", ["trailing\\", "\\q", "a\\zb"])
def test_unquote_rejects_invalid_escapes(bad: str) -> None:
    with pytest.raises(ValueError):
        go_unquote(bad)


# ----- times --------------------------------------------------------------------------------


def _ns_of(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1) * 1000


@pytest.mark.parametrize(
    ("text", "ns", "offset"),
    [
        (
            "2026-11-22T18:30:15.383129482Z",
            _ns_of(datetime(2026, 11, 22, 18, 30, 15, tzinfo=UTC)) + 383129482,
            0,
        ),
        ("0001-01-01T00:00:00Z", -62135596800 * NS, 0),
        ("1970-01-01T00:00:00Z", 0, 0),
        ("1969-12-31T23:59:59.999999999Z", -1, 0),
        (
            "2026-11-22T19:30:15.5+01:00",
            _ns_of(datetime(2026, 11, 22, 18, 30, 15, 500000, tzinfo=UTC)),
            3600,
        ),
        (
            "2026-03-01T00:15:00-03:30",
            _ns_of(datetime(2026, 3, 1, 3, 45, tzinfo=UTC)),
            -(3 * 3600 + 30 * 60),
        ),
        ("2000-02-29T12:00:00Z", _ns_of(datetime(2000, 2, 29, 12, tzinfo=UTC)), 0),
        ("9999-12-31T23:59:59.999999999Z", MAX_LOCAL_S * NS + 999999999, 0),
    ],
)
def test_known_times(text: str, ns: int, offset: int) -> None:
    parsed = parse_time(text)
    assert parsed == GoTime(ns, offset)
    assert format_time(parsed) == text
    assert str(parsed) == text


@pytest.mark.parametrize("digits", range(1, 10))
def test_fractions_of_every_length(digits: int) -> None:
    fraction = "123456789"[:digits]
    parsed = parse_time(f"2021-06-01T10:20:30.{fraction}Z")
    assert parsed.ns % NS == int(fraction.ljust(9, "0"))
    assert format_time(parsed) == f"2021-06-01T10:20:30.{fraction}Z"


@pytest.mark.parametrize(
    ("nanos", "suffix"),
    [(0, ""), (500_000_000, ".5"), (120_000_000, ".12"), (1_000, ".000001"), (1, ".000000001")],
)
def test_trailing_zeros_are_trimmed(nanos: int, suffix: str) -> None:
    base = _ns_of(datetime(2021, 6, 1, 10, 20, 30, tzinfo=UTC))
    assert format_time(GoTime(base + nanos)) == f"2021-06-01T10:20:30{suffix}Z"
    assert parse_time("2021-06-01T10:20:30.500000000Z").ns == base + 500_000_000
    assert format_time(parse_time("2021-06-01T10:20:30.500000000Z")) == "2021-06-01T10:20:30.5Z"


@pytest.mark.parametrize(
    "bad",
    [
        "2021-06-01 10:20:30Z",
        "2021-06-01T10:20:30",
        "2021-06-01T10:20:30.Z",
        "2021-06-01T10:20:30.1234567890Z",
        "21-06-01T10:20:30Z",
        "2021-06-01T10:20:30+0100",
        "",
    ],
)
def test_invalid_times_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda minutes: minutes * 60)


@st.composite
def go_times(draw: st.DrawFn, min_s: int = MIN_LOCAL_S, max_s: int = MAX_LOCAL_S) -> GoTime:
    offset = draw(offsets)
    local_ns = draw(st.integers(min_value=min_s * NS, max_value=max_s * NS + NS - 1))
    return GoTime(local_ns - offset * NS, offset)


@settings(deadline=None)
@given(go_times())
def test_time_round_trip_years_1_to_9999(value: GoTime) -> None:
    text = format_time(value)
    assert parse_time(text) == value
    assert format_time(parse_time(text)) == text


_FORMATTED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


@settings(deadline=None)
@given(go_times())
def test_format_agrees_with_datetime(value: GoTime) -> None:
    """Cross-check the calendar arithmetic against Python's datetime."""
    seconds, nanos = divmod(value.ns, NS)
    # The wall clock of the instant in its zone (shift first: the UTC instant itself may lie
    # just outside datetime's year range when the local time does not).
    local = EPOCH + timedelta(seconds=seconds + value.offset)
    match = _FORMATTED.match(format_time(value))
    assert match is not None
    wall, fraction, zone_text = match.groups()
    expected_wall = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
        f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    assert wall == expected_wall
    if nanos:
        assert fraction is not None
        assert not fraction.endswith("0")
        assert int(fraction.ljust(9, "0")) == nanos
    else:
        assert fraction is None
    if value.offset == 0:
        assert zone_text == "Z"
    else:
        # datetime names a fixed zone "UTC+01:00" / "UTC-03:30"
        zone_name = timezone(timedelta(seconds=value.offset)).tzname(None)
        assert f"UTC{zone_text}" == zone_name


def test_go_time_orders_by_instant() -> None:
    early = parse_time("2026-01-01T01:00:00+02:00")  # 2025-12-31T23:00Z
    late = parse_time("2026-01-01T00:00:00Z")
    assert early < late


# ----- file modes ---------------------------------------------------------------------------

# Go os.FileMode values as restic stores them in tree nodes.
GO_DIR = 0x80000000
GO_SYMLINK = 0x08000000
GO_DEVICE = 0x04000000
GO_PIPE = 0x02000000
GO_SOCKET = 0x01000000
GO_SETUID = 0x00800000
GO_SETGID = 0x00400000
GO_CHARDEV = 0x00200000
GO_STICKY = 0x00100000


@pytest.mark.parametrize(
    ("st_mode", "go_mode", "perm"),
    [
        (stat.S_IFDIR | 0o755, 2147484141, 0o755),  # restic: "mode":2147484141 for drwxr-xr-x
        (stat.S_IFREG | 0o644, 420, 0o644),
        (stat.S_IFREG | 0o4755, GO_SETUID | 0o755, 0o4755),
        (stat.S_IFREG | 0o2750, GO_SETGID | 0o750, 0o2750),
        (stat.S_IFDIR | 0o1777, GO_DIR | GO_STICKY | 0o777, 0o1777),
        (stat.S_IFREG | 0o7777, GO_SETUID | GO_SETGID | GO_STICKY | 0o777, 0o7777),
        (stat.S_IFLNK | 0o777, 134218239, 0o777),
        (stat.S_IFIFO | 0o644, GO_PIPE | 0o644, 0o644),
        (stat.S_IFCHR | 0o666, GO_DEVICE | GO_CHARDEV | 0o666, 0o666),
        (stat.S_IFBLK | 0o660, GO_DEVICE | 0o660, 0o660),
        (stat.S_IFSOCK | 0o755, GO_SOCKET | 0o755, 0o755),
    ],
)
def test_go_mode_conversion(st_mode: int, go_mode: int, perm: int) -> None:
    assert go_mode_from_stat(st_mode) == go_mode
    assert posix_permissions_from_go_mode(go_mode) == perm


def test_go_modes_of_real_files(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    os.chmod(directory, 0o1755)
    assert go_mode_from_stat(os.lstat(directory).st_mode) == GO_DIR | GO_STICKY | 0o755

    regular = tmp_path / "file"
    regular.write_bytes(b"x")
    os.chmod(regular, 0o6711)
    assert go_mode_from_stat(os.lstat(regular).st_mode) == GO_SETUID | GO_SETGID | 0o711

    link = tmp_path / "link"
    link.symlink_to("file")
    assert go_mode_from_stat(os.lstat(link).st_mode) == GO_SYMLINK | 0o777

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    os.chmod(fifo, 0o640)
    assert go_mode_from_stat(os.lstat(fifo).st_mode) == GO_PIPE | 0o640

    null = os.stat("/dev/null")
    assert go_mode_from_stat(null.st_mode) == GO_DEVICE | GO_CHARDEV | stat.S_IMODE(null.st_mode)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=0o7777))
def test_permission_bits_round_trip(perm: int) -> None:
    for kind in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR):
        assert posix_permissions_from_go_mode(go_mode_from_stat(kind | perm)) == perm
