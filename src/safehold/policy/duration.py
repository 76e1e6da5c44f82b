"""Durations as people write them in a plan: `90s`, `15m`, `1h30m`, `7d`, `2w`; and moments
as people type them on a command line (`parse_moment`): an ISO time with its offset, or a
duration back from now (`-2h`, `2h ago`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

UNITS: dict[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
DURATION_EXAMPLES = "15m, 1h or 7d"
_PART = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")


class DurationError(ValueError):
    """A duration could not be parsed; the message says why, in user terms."""


def parse_duration(text: str) -> timedelta:
    """`"1h30m"` -> `timedelta(hours=1, minutes=30)`. Units s, m, h, d, w, combinable."""
    stripped = text.strip()
    if not stripped:
        raise DurationError("the duration is empty")
    if stripped.startswith("-"):
        raise DurationError("a duration cannot be negative")
    if "." in stripped or "," in stripped:
        raise DurationError("use whole numbers, like 90m instead of 1.5h")
    seconds = 0
    position = 0
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None or match.end() == position:
            raise DurationError(f'"{stripped}" is not whole numbers followed by units')
        number, unit = match.group(1), match.group(2).lower()
        if not unit:
            raise DurationError(f"{number} has no unit (like {number}m)")
        if unit not in UNITS:
            raise DurationError(f'unknown unit "{unit}"')
        seconds += int(number) * UNITS[unit]
        position = match.end()
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The plan spelling of a whole-second duration: 5400s -> `1h30m`, 14 days -> `2w`."""
    total = int(value.total_seconds())
    if total < 0:
        raise ValueError("a duration cannot be negative")
    if total == 0:
        return "0s"
    if total % UNITS["w"] == 0:
        return f"{total // UNITS['w']}w"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, total = divmod(total, UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


MOMENT_EXAMPLES = '2026-12-07T01:30:00+01:00, 2026-12-07 00:30Z, -2h or "1h30m ago"'


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A moment, timezone-aware: an ISO 8601 time with an offset (`2026-12-07T01:30:00+01:00`,
    `2026-12-07 00:30Z`), or a duration before `now` (`-2h`, `-1d12h`, `2h ago`). A time
    without an offset is refused (on which clock?). Raises DurationError."""
    stripped = text.strip()
    if not stripped:
        raise DurationError(f"the time is empty; write it like {MOMENT_EXAMPLES}")
    current = now if now is not None else datetime.now(UTC)
    back = None
    if stripped.startswith("-"):
        back = stripped[1:]
    elif stripped.lower().endswith(" ago"):
        back = stripped[: -len(" ago")]
    if back is not None:
        try:
            return current - parse_duration(back)
        except DurationError as err:
            raise DurationError(f'"{stripped}": {err}') from None
    iso = stripped[:-1] + "+00:00" if stripped[-1:] in ("Z", "z") else stripped
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise DurationError(
            f'"{stripped}" is neither an ISO time nor a duration back from now; write it like '
            f"{MOMENT_EXAMPLES}"
        ) from None
    if moment.tzinfo is None:
        example = stripped if ("T" in stripped or " " in stripped) else f"{stripped}T00:00"
        raise DurationError(
            f'"{stripped}" has no UTC offset; add one, like {example}+00:00 or {example}Z'
        )
    return moment
