"""Last line of defence against leaks: every secret this process learns is registered here,
and everything the CLI prints (errors, warnings, JSON) passes through `redact`.

Sources and the plan already redact what they produce; this catches what slips through, e.g.
a password echoed back inside a tool's error message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_MIN_LENGTH = 4  # shorter values would mangle ordinary words
_lock = threading.Lock()
_secrets: set[str] = set()
_redactors: list[Callable[[str], str]] = []


def register_secret(value: str | bytes) -> None:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) >= _MIN_LENGTH:
        with _lock:
            _secrets.add(text)


def register_redactor(redactor: Callable[[str], str]) -> None:
    with _lock:
        _redactors.append(redactor)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
        redactors = list(_redactors)
    for redactor in redactors:
        text = redactor(text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def clear() -> None:
    """Forget everything (tests)."""
    with _lock:
        _secrets.clear()
        _redactors.clear()
