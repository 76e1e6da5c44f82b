"""A small `.env` reader: `KEY=VALUE` lines, `#` comments, optional quotes, `export ` prefix."""

from __future__ import annotations

import re
from pathlib import Path

from safehold.plan.errors import PlanError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _unquote_double(body: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body) and body[index + 1] in _ESCAPES:
            out.append(_ESCAPES[body[index + 1]])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _parse_value(raw: str) -> str | None:
    """The value of one line, or None when its quotes are not closed."""
    raw = raw.strip()
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = 1
        while True:
            end = raw.find(quote, end)
            if end == -1:
                return None
            if quote == "'" or raw[end - 1] != "\\":
                break
            end += 1
        rest = raw[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            return None
        body = raw[1:end]
        return body if quote == "'" else _unquote_double(body)
    comment = re.search(r"\s#", raw)
    return (raw[: comment.start()] if comment else raw).strip()


def parse_env_text(text: str, *, label: str = ".env", strict: bool = True) -> dict[str, str]:
    """The variables of a `.env` text. Bad lines raise PlanError, or are skipped if not strict."""
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, equals, raw = stripped.partition("=")
        key = key.strip()
        value = _parse_value(raw) if equals else None
        problem = (
            'a line without "="'
            if not equals
            else "an invalid variable name"
            if not _NAME.fullmatch(key)
            else "a quote that is not closed"
            if value is None
            else ""
        )
        if problem or value is None:
            if not strict:
                continue
            raise PlanError(  # the line itself is never shown: it may hold a secret
                f"{label}: line {number}: expected NAME=value; found {problem}",
                hint="write one variable per line as NAME=value (quotes optional, # for comments)",
            )
        variables[key] = value
    return variables


def read_env_file(path: Path, *, label: str | None = None, strict: bool = True) -> dict[str, str]:
    """The variables of the `.env` file at `path`; an absent file has none."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        if not strict:
            return {}
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise PlanError(
            f"{label or path}: cannot read it: {reason}",
            hint="fix the file's permissions or contents, or remove it",
        ) from None
    return parse_env_text(text, label=label or str(path), strict=strict)
