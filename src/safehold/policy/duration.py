"""Durations as people write them in a plan: `90s`, `15m`, `1h30m`, `7d`, `2w`."""

from __future__ import annotations

import re
from datetime import timedelta

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
