"""Plans for the operations tests (schedule, alerts, watch, daemon): a files source and a
local repository under a temporary app folder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.plan.loader import parse_plan
from safehold.plan.models import Plan

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def plan_text(
    extra: str = "", *, repository: str = "repo", rpo: str = "24h", destinations: str = ""
) -> str:
    return f"""\
app = "shop"
env = "prod"

[targets]
rpo = "{rpo}"
rto = "1h"

[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]

[[destinations]]
name = "local"
repository = "{repository}"
{destinations}
{extra}
"""


def make_plan(folder: Path, extra: str = "", **kwargs: str) -> Plan:
    """Write the plan (and a small uploads folder) into `folder` and load it."""
    (folder / "uploads").mkdir(parents=True, exist_ok=True)
    (folder / "uploads" / "a.txt").write_text("hello\n")
    text = plan_text(extra, **kwargs)
    (folder / "safehold.toml").write_text(text)
    return parse_plan(text, file=folder / "safehold.toml", environ={})


class FakeClock:
    """A clock the test moves by hand (the code under test only reads it)."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
