"""The plan file's one error type, and how a place in the plan is written (`sources[1].url`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from safehold.errors import SafeholdError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class PlanError(SafeholdError):
    """The plan file cannot be used as written. The message is one line:
    `<file>: <key.path>: expected <what>; found <what>`; `problems` lists every problem found."""

    default_hint = "fix the plan file, then run `safehold plan check`"

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        file: Path | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message, hint)
        self.file = file
        self.problems = list(problems) or [message]


def key_part(key: str) -> str:
    """A TOML key as written in a key path: bare when it can be, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def format_path(parts: Sequence[str | int]) -> str:
    """`("sources", 1, "url")` -> `sources[1].url`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + key_part(part)
    return out
