"""The "are you actually protected?" scorecard: one item per question, PASS/WARN/FAIL with a
one-line fix. `safehold status` collects items from the plan, the repositories, the drill
records and the schedule/alert state; each check lives next to the thing it checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Level(Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @property
    def exit_code(self) -> int:
        return {Level.PASS: 0, Level.WARN: 1, Level.FAIL: 2}[self]


@dataclass(frozen=True)
class ScoreItem:
    """One line of the scorecard. `fix` is empty when the item passes."""

    key: str  # stable identifier, like "backup-fresh:db"
    level: Level
    title: str  # what was checked, like "newest backup of db is younger than the RPO (1h)"
    detail: str  # what was found, like "newest good backup 25m ago"
    fix: str = ""  # one line: what to do, like "run `safehold backup`"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = self.level.value
        return data


def worst(items: list[ScoreItem]) -> Level:
    """The overall result: FAIL if any item fails, else WARN if any warns, else PASS."""
    levels = {item.level for item in items}
    if Level.FAIL in levels:
        return Level.FAIL
    if Level.WARN in levels:
        return Level.WARN
    return Level.PASS
