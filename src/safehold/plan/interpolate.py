"""`${VAR}` and `${VAR:-default}` in every string value of a plan, from the environment and
from the `.env` file next to the plan (the real environment wins). `$$` is a literal `$`.

Every substitution is recorded, so that values which may be secrets can be redacted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from safehold.plan.errors import PlanError, format_path
from safehold.redaction import is_secret_name, url_password

Origin = Literal["environment", ".env", "default"]
_TOKEN = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


@dataclass(frozen=True)
class Substitution:
    """One `${VAR}` replaced in the plan: where, by what, and from where."""

    path: str  # key path, like `sources[0].url`
    variable: str
    value: str = field(repr=False)  # may be a secret: never shown
    origin: Origin

    @property
    def secret(self) -> bool:
        """Whether the value must be treated as a secret (by the variable's name)."""
        return is_secret_name(self.variable) or url_password(self.value) is not None


@dataclass(frozen=True)
class Variables:
    """Where `${VAR}` values come from: the environment first, then the `.env` file."""

    environ: Mapping[str, str]
    dotenv: Mapping[str, str] = field(default_factory=dict)
    dotenv_path: Path | None = None

    def lookup(self, name: str) -> tuple[str, Origin] | None:
        if name in self.environ:
            return self.environ[name], "environment"
        if name in self.dotenv:
            return self.dotenv[name], ".env"
        return None


@dataclass
class Interpolated:
    data: dict[str, Any]
    substitutions: list[Substitution]


def _missing_hint(variables: Variables) -> str:
    if variables.dotenv_path is not None:
        return f"set it in the environment or in {variables.dotenv_path}"
    return "set it in the environment or in a .env file next to the plan"


def interpolate_string(
    text: str, variables: Variables, *, path: str, label: str
) -> tuple[str, list[Substitution]]:
    """`text` with every `${…}` replaced; raises PlanError for unset or malformed ones."""
    found: list[Substitution] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        body = _BODY.fullmatch(match.group("body") or "") if token.endswith("}") else None
        if body is None:
            shown = token if len(token) <= 40 else token[:37] + "..."
            raise PlanError(
                f'{label}: {path}: expected ${{NAME}} or ${{NAME:-default}}; found "{shown}"',
                hint="variable names are letters, digits and _; write $$ for a literal $",
            )
        name, default = body.group("name"), body.group("default")
        looked_up = variables.lookup(name)
        if default is not None and (looked_up is None or looked_up[0] == ""):
            found.append(Substitution(path, name, default, "default"))
            return default
        if looked_up is None:
            raise PlanError(
                f"{label}: {path}: expected the variable {name} to be set; found it unset",
                hint=_missing_hint(variables),
            )
        found.append(Substitution(path, name, looked_up[0], looked_up[1]))
        return looked_up[0]

    return _TOKEN.sub(replace, text), found


def interpolate(data: dict[str, Any], variables: Variables, *, label: str) -> Interpolated:
    """A copy of the parsed plan with every string value interpolated."""
    substitutions: list[Substitution] = []

    def walk(value: Any, parts: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            result, found = interpolate_string(
                value, variables, path=format_path(parts), label=label
            )
            substitutions.extend(found)
            return result
        if isinstance(value, dict):
            return {key: walk(item, (*parts, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*parts, index)) for index, item in enumerate(value)]
        return value

    return Interpolated(walk(data, ()), substitutions)
