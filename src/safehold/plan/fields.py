"""Field types of the plan models. Their validators raise `problem(...)` errors that carry the
user's words (`expected …`), which `errortext` turns into one line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from safehold.policy.duration import (
    DURATION_EXAMPLES,
    DurationError,
    format_duration,
    parse_duration,
)

SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLAN_ERROR = "plan"
UNSUPPORTED_LOCATIONS = ("s3:", "sftp:", "rest:", "b2:", "azure:", "gs:", "rclone:", "swift:")
REMOTE_TYPES = ("s3", "sftp")


def describe_value(value: Any) -> str:
    """How a TOML value is shown after `found`: strings quoted, tables and lists by kind."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"the date/time {value.isoformat()}"
    return type(value).__name__


def problem(
    expected: str,
    *,
    found: str | None = None,
    hint: str | None = None,
    at: Sequence[str | int] | None = None,
) -> PydanticCustomError:
    """A validation error in plan words. `found` defaults to the value given; `at` overrides
    where the error is reported (a key path relative to the model, or absolute from a plan)."""
    context: dict[str, Any] = {"expected": expected}
    if found is not None:
        context["found"] = found
    if hint is not None:
        context["hint"] = hint
    if at is not None:
        context["at"] = tuple(at)
    return PydanticCustomError(PLAN_ERROR, "expected {expected}", context)


def _text(
    expected: str,
    *,
    pattern: re.Pattern[str] | None = None,
    hint: str | None = None,
) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise problem(expected, hint=hint)
        if pattern is not None and not pattern.fullmatch(value):
            raise problem(expected, hint=hint)
        return value

    return check


def _duration(value: Any) -> timedelta:
    expected = f"a duration like {DURATION_EXAMPLES}"
    if not isinstance(value, str):
        raise problem(expected, hint='write it in quotes with a unit, like "1h" or "90s"')
    try:
        return parse_duration(value)
    except DurationError as err:
        raise problem(expected, hint=f"{err}; units: s, m, h, d, w, like 90s or 1h30m") from None


PITR_EXAMPLES = '"wal" (safehold archives the WAL) or "provider:7d" (the provider\'s PITR)'


def _pitr(value: Any) -> str:
    """`pitr`: "wal", or "provider:<window>" for a managed database's own PITR."""
    if isinstance(value, str) and value.strip() == "wal":
        return "wal"
    if isinstance(value, str) and value.startswith("provider:"):
        _duration(value.removeprefix("provider:"))
        return value
    raise problem(PITR_EXAMPLES, hint='like pitr = "wal"')


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise problem(
            "a duration longer than 0s",
            found=f'"{format_duration(value)}"',
            hint="a zero duration can never be met",
        )
    return value


def path_checker(expected: str) -> Callable[[Any, ValidationInfo], Path]:
    """A path; relative ones are made absolute against the plan's folder (the validation
    context's `base_dir`); `~` is the home folder (the context's `home`)."""

    def check(value: Any, info: ValidationInfo) -> Path:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise problem(expected)
        context = info.context if isinstance(info.context, dict) else {}
        text = value
        home = context.get("home")
        if home and (text == "~" or text.startswith("~/")):
            text = str(home) + text[1:]
        path = Path(text)
        base = context.get("base_dir")
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        return path

    return check


def url_checker(schemes: Sequence[str], expected: str, example: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise problem(expected)
        scheme, sep, _rest = value.partition("://")
        if not sep or scheme.lower() not in schemes:
            hint = f"write it like {example}, with the password from a variable"
            if sep and "+" in scheme and scheme.split("+")[0].lower() in schemes:
                hint = f"drop the driver suffix: write {scheme.split('+')[0]}:// ({hint})"
            raise problem(expected, hint=hint)
        return value

    return check


def nonempty_list(expected: str) -> Callable[[list[Any]], list[Any]]:
    def check(value: list[Any]) -> list[Any]:
        if not value:
            raise problem(expected, found="none")
        return value

    return check


def _filename(value: Any) -> str:
    expected = "a plain file name like billing.json"
    if (
        not isinstance(value, str)
        or not value.strip()
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or "\0" in value
    ):
        raise problem(expected, hint="no folders: the file is stored in the source's folder")
    return value


def _secret_pattern(value: Any) -> str:
    expected = 'a path relative to the plan folder, like "config/master.key" or "certs/*.key"'
    if not isinstance(value, str) or not value.strip() or "\0" in value or "\\" in value:
        raise problem(expected)
    parts = value.split("/")
    if value.startswith(("/", "~")) or any(part in ("", ".", "..") for part in parts):
        raise problem(expected, hint="secrets are stored at their path under the plan folder")
    return value


def _age_recipient(value: Any) -> str:
    import pyrage  # the age library: loaded only by plans that name recipients

    expected = "an age public key like age1…"
    hint = "print one with `age-keygen -y key.txt` (keep key.txt in the password manager)"
    if not isinstance(value, str) or not value.startswith("age1"):
        raise problem(expected, hint=hint)
    try:
        pyrage.x25519.Recipient.from_str(value)
    except pyrage.RecipientError:
        raise problem(expected, found=f'"{value[:12]}…" (not a valid key)', hint=hint) from None
    return value


def _repository(value: Any) -> Any:
    if isinstance(value, str):
        for scheme in UNSUPPORTED_LOCATIONS:
            if value.startswith(scheme):
                kind = scheme.rstrip(":")
                if kind in REMOTE_TYPES:
                    raise problem(
                        f"a local folder path ({scheme} locations go in url)",
                        hint=f'write type = "{kind}" and url = "{value}" instead of repository',
                    )
                raise problem(
                    f"a local folder path ({scheme} repositories are not supported yet)",
                    hint="use a local folder, or an s3 or sftp destination",
                )
        if value.startswith("local:"):
            return value[len("local:") :]
    return value


def _destination_type(value: Any) -> Any:
    if value not in ("local", *REMOTE_TYPES):
        name = value.rstrip(":") if isinstance(value, str) else ""
        hint = "use local (a folder), s3 or sftp"
        if name and name + ":" in UNSUPPORTED_LOCATIONS:
            hint = f"{name} destinations are not supported yet; use local, s3 or sftp"
        raise problem("one of local, s3, sftp", hint=hint)
    return value


def _remote_url(value: Any) -> Any:
    expected = 'a location like "s3:https://host/bucket/prefix" or "sftp:user@host:/path"'
    if not isinstance(value, str) or not value.startswith(tuple(f"{t}:" for t in REMOTE_TYPES)):
        raise problem(expected)
    return value


def _env_var(value: Any) -> str:
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
        raise problem("an environment variable name like SAFEHOLD_PASSWORD")
    return value


_SLUG_HINT = "use lowercase letters, digits and single dashes"
_NAME_HINT = "use lowercase letters, digits, _ and -, starting with a letter or digit"

AppName = Annotated[
    str,
    BeforeValidator(_text("an app name like myapp", pattern=SLUG, hint=_SLUG_HINT)),
    Field(description="an app name like myapp"),
]
EnvName = Annotated[
    str,
    BeforeValidator(_text("an environment name like prod", pattern=SLUG, hint=_SLUG_HINT)),
    Field(description="an environment name like prod"),
]
SourceName = Annotated[
    str,
    BeforeValidator(_text("a source name like db or uploads", pattern=NAME, hint=_NAME_HINT)),
    Field(description="a source name like db or uploads"),
]
DestinationName = Annotated[
    str,
    BeforeValidator(_text("a destination name like local", pattern=NAME, hint=_NAME_HINT)),
    Field(description="a destination name like local"),
]
DatabaseName = Annotated[str, BeforeValidator(_text("a database name"))]
Text = Annotated[str, BeforeValidator(_text("some text")), Field(description="some text")]
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    AfterValidator(_positive),
    Field(description=f"a duration like {DURATION_EXAMPLES}"),
]
PitrMode = Annotated[str, BeforeValidator(_pitr), Field(description=PITR_EXAMPLES)]
PlanPath = Annotated[Path, BeforeValidator(path_checker("a path")), Field(description="a path")]
SQLitePath = Annotated[
    Path,
    BeforeValidator(path_checker("the path of the SQLite database file")),
    Field(description="the path of the SQLite database file"),
]
PasswordFile = Annotated[
    Path,
    BeforeValidator(path_checker("the path of the password file")),
    Field(description="the path of the password file"),
]
FileName = Annotated[str, BeforeValidator(_filename)]
Repository = Annotated[
    Path,
    BeforeValidator(path_checker("a local folder path for the repository")),
    BeforeValidator(_repository),
    Field(description="a local folder path for the repository"),
]
DestinationType = Annotated[Literal["local", "s3", "sftp"], BeforeValidator(_destination_type)]
RemoteURL = Annotated[
    str,
    BeforeValidator(_remote_url),
    Field(description='a location like "s3:https://host/bucket/prefix"'),
]
EnvVar = Annotated[str, BeforeValidator(_env_var)]
SecretPattern = Annotated[
    str,
    BeforeValidator(_secret_pattern),
    Field(description='a path relative to the plan folder, like "config/master.key"'),
]
AgeRecipient = Annotated[
    str, BeforeValidator(_age_recipient), Field(description="an age public key like age1…")
]
