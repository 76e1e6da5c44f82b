"""Go encodings restic's JSON relies on: strconv.Quote'd names, RFC 3339 nano times, FileMode.

restic stores a node's name as Go's `strconv.Quote(name)` without the surrounding quotes, so any
byte string (newlines, invalid UTF-8) round-trips; we implement Quote/Unquote exactly.
Times are kept as integer nanoseconds since the epoch plus the UTC offset they were written
with, because Python's datetime stops at microseconds and mtimes must round-trip exactly.
"""

from __future__ import annotations

import re
import stat
import time as _time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

_SIMPLE_ESCAPES = {
    0x07: "\\a",
    0x08: "\\b",
    0x0C: "\\f",
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x0B: "\\v",
    0x5C: "\\\\",
    0x22: '\\"',
}


def go_quote(raw: bytes) -> str:
    """Go's strconv.Quote(raw) without the enclosing double quotes."""
    text = raw.decode("utf-8", errors="surrogateescape")
    if text.isascii() and text.isprintable() and "\\" not in text and '"' not in text:
        return text
    out: list[str] = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an invalid byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[code])
        elif char.isprintable():
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


_UNQUOTE_SIMPLE = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
    '"': b'"',
    "'": b"'",
}


def go_unquote(quoted: str) -> bytes:
    """Inverse of go_quote: the raw bytes of a name restic quoted."""
    if "\\" not in quoted:
        return quoted.encode("utf-8", errors="surrogateescape")
    out = bytearray()
    index = 0
    length = len(quoted)
    while index < length:
        char = quoted[index]
        if char != "\\":
            out += char.encode("utf-8", errors="surrogateescape")
            index += 1
            continue
        if index + 1 >= length:
            raise ValueError(f"invalid quoted name {quoted!r}")
        kind = quoted[index + 1]
        if kind in _UNQUOTE_SIMPLE:
            out += _UNQUOTE_SIMPLE[kind]
            index += 2
        elif kind == "x":
            out.append(int(quoted[index + 2 : index + 4], 16))
            index += 4
        elif kind == "u":
            out += chr(int(quoted[index + 2 : index + 6], 16)).encode("utf-8", "surrogatepass")
            index += 6
        elif kind == "U":
            out += chr(int(quoted[index + 2 : index + 10], 16)).encode("utf-8", "surrogatepass")
            index += 10
        elif kind in "01234567":
            out.append(int(quoted[index + 1 : index + 4], 8))
            index += 4
        else:
            raise ValueError(f"invalid escape \\{kind} in quoted name {quoted!r}")
    return bytes(out)


@dataclass(frozen=True, order=True)
class GoTime:
    """An instant in nanoseconds since the epoch, with the UTC offset (seconds) to print it in."""

    ns: int
    offset: int = 0

    def __str__(self) -> str:
        return format_time(self)

    def to_datetime(self) -> datetime:
        """An aware datetime in this time's own UTC offset (microsecond precision)."""
        zone = timezone(timedelta(seconds=self.offset))
        return datetime.fromtimestamp(self.ns / 1e9, tz=zone)


_TIME_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$"
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return year + (month <= 2), month, day


def parse_time(text: str) -> GoTime:
    """Parse Go's RFC3339Nano output (any fraction length, Z or ±hh:mm)."""
    return _parse_time(text)


@lru_cache(maxsize=16384)
def _parse_time(text: str) -> GoTime:
    # Cached (GoTime is immutable): a tree's nodes often share a ctime or an atime, and
    # every command that reads trees (restore, ls, diff, a re-backup's parent) parses them.
    match = _TIME_RE.match(text)
    if not match:
        raise ValueError(f"invalid timestamp {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    offset = (
        0
        if zone == "Z"
        else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    )
    seconds = (
        _day_seconds(int(year), int(month), int(day))
        + int(hour) * 3600
        + int(minute) * 60
        + int(second)
    )
    return GoTime((seconds - offset) * 1_000_000_000 + nanos, offset)


@lru_cache(maxsize=4096)
def _day_seconds(year: int, month: int, day: int) -> int:
    return _days_from_civil(year, month, day) * 86400


_GMTIME_MIN = 0  # 1970-01-01
_GMTIME_MAX = 253402300799  # 9999-12-31T23:59:59


@lru_cache(maxsize=4096)
def _format_seconds(seconds: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of local seconds; cached, as files often share their second."""
    if _GMTIME_MIN <= seconds <= _GMTIME_MAX:  # fast path: C's gmtime for common dates
        parts = _time.gmtime(seconds)
        year, month, day = parts.tm_year, parts.tm_mon, parts.tm_mday
        hour, minute, second = parts.tm_hour, parts.tm_min, parts.tm_sec
    else:
        days, rest = divmod(seconds, 86400)
        year, month, day = _civil_from_days(days)
        hour, rest = divmod(rest, 3600)
        minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def format_time(value: GoTime) -> str:
    """Format like Go's time.Format(time.RFC3339Nano): trailing zeros of the fraction dropped."""
    return format_ns(value.ns, value.offset)


def format_ns(ns: int, offset: int) -> str:
    """`format_time(GoTime(ns, offset))` without building the GoTime: a re-backup formats
    the times of every file it stats (fs/metadata.py `stat_times`)."""
    seconds, nanos = divmod(ns + offset * 1_000_000_000, 1_000_000_000)
    suffix = _ZONE_SUFFIXES.get(offset)
    if suffix is None:
        suffix = _ZONE_SUFFIXES.setdefault(offset, _zone_suffix(offset))
    if nanos:  # at least one digit of the fraction is not 0: rstrip stops inside it
        return f"{_format_seconds(seconds)}.{nanos:09d}".rstrip("0") + suffix
    return _format_seconds(seconds) + suffix


_ZONE_SUFFIXES: dict[int, str] = {}  # UTC offset (seconds) -> "Z" or "+HH:MM"


def _zone_suffix(offset: int) -> str:
    if offset == 0:
        return "Z"
    sign = "+" if offset > 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


# Go's os.FileMode type bits (restic stores Go FileMode values in tree nodes).
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20


def go_mode_from_stat(st_mode: int) -> int:
    """Convert a POSIX st_mode to the Go FileMode restic records."""
    mode = st_mode & 0o777
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= GO_MODE_DIR
    elif kind == stat.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif kind == stat.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    elif kind == stat.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    return mode


def posix_permissions_from_go_mode(go_mode: int) -> int:
    """The chmod() bits (permissions plus setuid/setgid/sticky) of a Go FileMode."""
    mode = go_mode & 0o777
    if go_mode & GO_MODE_SETUID:
        mode |= stat.S_ISUID
    if go_mode & GO_MODE_SETGID:
        mode |= stat.S_ISGID
    if go_mode & GO_MODE_STICKY:
        mode |= stat.S_ISVTX
    return mode
