"""Pydantic's validation errors, said in the plan's words: one line per problem,
`<file>: <key.path>: expected <what>; found <what>`, and a hint. No pydantic wording leaks."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from safehold.plan.errors import PlanError, format_path
from safehold.plan.fields import PLAN_ERROR, describe_value
from safehold.plan.redact import Redactor
from safehold.redaction import field_secrets, redact_secrets

_MAX_FOUND = 120
_BY_TYPE = {
    "string_type": "text in quotes",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


@dataclass
class _Place:
    parts: list[str | int]
    model: type[BaseModel] | None  # the model whose key was named last
    field: FieldInfo | None
    at_field: bool  # whether the place is the field itself (not an item inside it)


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def union_tags(annotation: Any) -> dict[str, type[BaseModel]]:
    """The models of a union discriminated on `type`, by tag."""
    annotation = _strip(annotation)
    if get_origin(annotation) not in (Union, types.UnionType):
        return {}
    tags: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        if _is_model(member) and "type" in member.model_fields:
            literal = member.model_fields["type"].annotation
            if get_origin(literal) is Literal:
                tags.update({str(tag): member for tag in get_args(literal)})
    return tags


def locate(root: type[BaseModel], loc: tuple[str | int, ...]) -> _Place:
    """Follow a pydantic error location through the models: the key path (union tags
    dropped), and the model field it ends on."""
    current: Any = root
    place = _Place([], None, None, False)
    for part in loc:
        current = _strip(current)
        tags = union_tags(current)
        if tags:
            if isinstance(part, str) and part in tags:
                current = tags[part]
                continue
            current = next(
                (m for m in tags.values() if isinstance(part, str) and part in m.model_fields),
                None,
            )
        place.parts.append(part)
        if _is_model(current):
            place.model = current
            place.field = current.model_fields.get(part) if isinstance(part, str) else None
            place.at_field = place.field is not None
            current = place.field.annotation if place.field is not None else None
        elif get_origin(current) in (list, dict):
            place.at_field = False
            current = get_args(current)[-1]
        else:
            place.at_field = False
            current = None
    return place


def _did_you_mean(word: str, choices: list[str]) -> str | None:
    lowered = {choice.lower(): choice for choice in choices}
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[matches[0]] if matches else None


def _source_name(data: Mapping[str, Any], parts: list[str | int]) -> str | None:
    if len(parts) < 3 or parts[0] != "sources" or not isinstance(parts[1], int):
        return None
    sources = data.get("sources")
    if not isinstance(sources, list) or parts[1] >= len(sources):
        return None
    entry = sources[parts[1]]
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and parts[2] != "name" else None


def _problem(error: ErrorDetails, root: type[BaseModel]) -> tuple[list[str | int], str, str]:
    """(key path parts, the text after the key path, a hint) for one pydantic error."""
    kind = error["type"]
    context = error.get("ctx") or {}
    loc = tuple(error["loc"])
    if kind == PLAN_ERROR:
        loc += tuple(context.get("at", ()))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc += ("type",)
    place = locate(root, loc)
    description = place.field.description if place.field and place.field.description else None
    given = error.get("input")
    secrets = field_secrets(tuple(place.parts), given)  # by what the field is, even malformed
    if secrets:
        given = redact_secrets(str(given), secrets)

    if kind == PLAN_ERROR:
        found = redact_secrets(context["found"], secrets) if context.get("found") else None
        found = found or describe_value(given)
        hint = context.get("hint") or ""
        return place.parts, f"expected {context['expected']}; found {found}", hint
    if kind == "extra_forbidden":
        allowed = list(place.model.model_fields) if place.model else []
        allowed.sort(key=lambda name: (name not in ("name", "type"), name != "name"))
        key = str(place.parts[-1])
        guess = _did_you_mean(key, allowed)
        text = "unknown key" + (f" (did you mean {guess}?)" if guess else "")
        return place.parts, text, "the keys allowed here are: " + ", ".join(allowed)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = list(union_tags(_union_at(root, loc[:-1])))
        tag = given.get("type") if isinstance(given, dict) else None
        guess = _did_you_mean(tag, tags) if isinstance(tag, str) else None
        hint = f"did you mean {guess}?" if guess else "set type to one of the types above"
        found = describe_value(tag)
        return place.parts, f"expected one of {', '.join(tags)}; found {found}", hint
    if kind == "missing":
        key = str(place.parts[-1])
        parent = format_path(place.parts[:-1])
        where = f"to {parent}" if parent else "at the top of the file"
        expected = description or "a value"
        field_type = _strip(place.field.annotation) if place.field else None
        if _is_model(field_type):
            hint = f"add a [{format_path(place.parts)}] table"
        else:
            hint = f"add {key} = … {where}"
        return place.parts, f"expected {expected}; found nothing", hint
    if place.at_field and description:
        expected = description
    else:
        expected = _BY_TYPE.get(kind, "a different value")
    return place.parts, f"expected {expected}; found {describe_value(given)}", ""


def _union_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> Any:
    """The annotation at `loc` (for finding a union's tags)."""
    current: Any = root
    for part in loc:
        current = _strip(current)
        if _is_model(current) and isinstance(part, str) and part in current.model_fields:
            current = current.model_fields[part].annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
    return current


def _shorten(found_text: str) -> str:
    return found_text if len(found_text) <= _MAX_FOUND else found_text[: _MAX_FOUND - 1] + "…"


def plan_error(
    error: ValidationError,
    *,
    root: type[BaseModel],
    label: str,
    data: Mapping[str, Any],
    redactor: Redactor,
    file: Path | None = None,
) -> PlanError:
    """One PlanError for a failed validation: the first problem is the message, all are in
    `problems`; everything is redacted."""
    lines: list[str] = []
    hints: list[str] = []
    details_list = error.errors(include_url=False)
    # An unknown key is most often a misspelt one: report it before the key it was meant to be.
    details_list.sort(key=lambda details: details["type"] != "extra_forbidden")
    for details in details_list:
        parts, text, hint = _problem(details, root)
        path = format_path(parts)
        line = redactor(f"{label}: {path}: {text}" if path else f"{label}: {text}")
        head, sep, found = line.partition("; found ")
        lines.append(head + sep + _shorten(found) if sep else line)
        name = _source_name(data, parts)
        if name is not None:
            where = f'{format_path(parts[:2])} is the source "{name}"'
            hint = f"{hint} ({where})" if hint else where
        hints.append(redactor(hint) if hint else "")
    hint = hints[0] or PlanError.default_hint
    if len(lines) > 1:
        more = len(lines) - 1
        hint += f" ({more} more problem{'s' if more > 1 else ''} in this file)"
    return PlanError(lines[0], hint, file=file, problems=lines)
