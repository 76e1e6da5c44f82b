"""Finding and loading the plan file: explicit path > `SAFEHOLD_PLAN` > `./safehold.toml`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from safehold.plan.envfile import read_env_file
from safehold.plan.errors import PlanError
from safehold.plan.errortext import plan_error
from safehold.plan.interpolate import Substitution, Variables, interpolate
from safehold.plan.locate import DOTENV_FILENAME, find_plan, plan_label
from safehold.plan.models import Plan
from safehold.plan.redact import Redactor
from safehold.redaction import field_secrets, url_password

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def _toml_error(err: tomllib.TOMLDecodeError, label: str, file: Path) -> PlanError:
    text = str(err)
    match = _TOML_POSITION.search(text)
    reason = text[: match.start()] if match else text
    reason = reason[:1].lower() + reason[1:]
    if match and match.group(1):
        where = f"line {match.group(1)}, column {match.group(2)}"
    else:
        where = "at the end of the file"
    return PlanError(
        f"{label}: {where}: invalid TOML: {reason}",
        hint='check the syntax there: key = "text in quotes", [table], [[list of tables]]',
        file=file,
    )


def _fields(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every scalar of the plan data with its key path, like (("pings", "backup"), url)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _fields(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _fields(item, (*path, index))
    else:
        yield path, value


def build_redactor(data: Mapping[str, Any], substitutions: list[Substitution]) -> Redactor:
    """Every secret of an interpolated plan: values of secret-named variables, the password
    of every URL in it (literal or interpolated), and the secrets each field holds by what
    it is (`redaction.field_secrets`: credentials, ping and alert URLs, locations), so that
    errors about a malformed value are redacted too."""
    redactor = Redactor()
    for item in substitutions:
        if item.secret and url_password(item.value) is None:
            redactor.add(item.value)
    for path, value in _fields(dict(data)):
        if isinstance(value, str) and "://" in value:
            redactor.add_url(value)
        for secret in field_secrets(path, value):  # by what the field is, even malformed
            redactor.add(secret)
    return redactor


def parse_plan(
    text: str,
    *,
    file: Path,
    environ: Mapping[str, str],
    label: str | None = None,
    only_sources: Collection[str] | None = None,
) -> Plan:
    """The plan in `text`, as if read from `file` (its folder anchors relative paths and
    holds the `.env` file).

    With `only_sources`, the other `[[sources]]` tables are left out before `${VAR}`s are
    filled: restoring one source on a new machine needs only that source's variables (the
    app's own variables may be inside the secrets backup being restored)."""
    label = label or file.name
    base_dir = file.parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _toml_error(err, label, file) from None
    dotenv_path = base_dir / DOTENV_FILENAME
    dotenv_label = str(Path(label).parent / DOTENV_FILENAME)
    variables = Variables(
        environ, read_env_file(dotenv_path, label=dotenv_label), dotenv_path=dotenv_path
    )
    tables = raw.get("sources")
    if (
        only_sources is not None
        and isinstance(tables, list)
        and any(isinstance(t, dict) and t.get("name") in only_sources for t in tables)
    ):  # an unknown name keeps them all, so the error names the plan's sources
        raw["sources"] = [
            table
            for table in raw["sources"]
            if not isinstance(table, dict) or table.get("name") in only_sources
        ]
    interpolated = interpolate(raw, variables, label=label)
    redactor = build_redactor(interpolated.data, interpolated.substitutions)
    context = {"base_dir": base_dir, "home": environ.get("HOME")}
    try:
        plan = Plan.model_validate(interpolated.data, context=context)
    except ValidationError as err:
        raise plan_error(
            err, root=Plan, label=label, data=interpolated.data, redactor=redactor, file=file
        ) from None
    plan.attach(file, redactor, interpolated.substitutions)
    return plan


def load_plan(
    path: Path | None = None,
    *,
    cwd: Path,
    environ: Mapping[str, str],
    only_sources: Collection[str] | None = None,
) -> Plan:
    """Find, read, interpolate and validate the plan (with `only_sources`: only those
    sources, see parse_plan). Errors are one-line PlanErrors."""
    file = find_plan(path, cwd=cwd, environ=environ)
    label = plan_label(file, cwd)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise PlanError(
            f"{label}: cannot read it: {err.strerror}",
            hint="check the file's permissions for the user running safehold",
            file=file,
        ) from None
    except UnicodeDecodeError:
        raise PlanError(
            f"{label}: expected UTF-8 text; found other bytes",
            hint="save the file as UTF-8",
            file=file,
        ) from None
    return parse_plan(text, file=file, environ=environ, label=label, only_sources=only_sources)
