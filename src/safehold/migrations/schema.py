"""Schema states and the change between two of them, and the rule that says whether rolling the
code back alone is safe after that change.

A state is the user tables' columns (type, nullability, default), as read from the catalog
before and after a deploy. Code rollback is safe when the change was *additive*: new tables,
and new columns the old code can ignore (nullable, or with a default). Anything that removed
or narrowed what the old code reads or writes makes it unsafe, and is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Column:
    type: str
    nullable: bool
    default: str | None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "nullable": self.nullable, "default": self.default}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Column:
        return cls(str(data.get("type", "")), bool(data.get("nullable", True)),
                   None if data.get("default") is None else str(data["default"]))  # fmt: skip


Schema = dict[str, dict[str, Column]]  # table -> column -> Column


def schema_to_json(schema: Schema) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        table: {name: col.to_json() for name, col in cols.items()} for table, cols in schema.items()
    }


def schema_from_json(data: dict[str, Any]) -> Schema:
    return {
        str(table): {str(name): Column.from_json(col) for name, col in (cols or {}).items()}
        for table, cols in (data or {}).items()
    }


@dataclass
class SchemaChange:
    tables_added: list[str] = field(default_factory=list)
    tables_dropped: list[str] = field(default_factory=list)
    columns_added: list[str] = field(default_factory=list)  # "table.column"
    columns_dropped: list[str] = field(default_factory=list)
    columns_changed: list[str] = field(default_factory=list)  # "table.column: old -> new"
    columns_required: list[str] = field(default_factory=list)  # added or made NOT NULL, no default

    @property
    def empty(self) -> bool:
        return not any(self.to_json().values())

    def reasons_unsafe(self) -> list[str]:
        """Why a code rollback alone would break the old code or leave data behind."""
        reasons = [f"table {name} was dropped" for name in self.tables_dropped]
        reasons += [f"column {name} was dropped" for name in self.columns_dropped]
        reasons += [f"column {name} changed type" for name in self.columns_changed]
        reasons += [
            f"column {name} is required (NOT NULL, no default): the old code does not write it"
            for name in self.columns_required
        ]
        return reasons

    @property
    def reversible(self) -> bool:
        return not self.reasons_unsafe()

    def summary(self) -> str:
        if self.empty:
            return "no schema change"
        parts = []
        for label, items in (
            ("tables added", self.tables_added),
            ("tables dropped", self.tables_dropped),
            ("columns added", self.columns_added),
            ("columns dropped", self.columns_dropped),
            ("columns changed", self.columns_changed),
        ):
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "tables_added": self.tables_added,
            "tables_dropped": self.tables_dropped,
            "columns_added": self.columns_added,
            "columns_dropped": self.columns_dropped,
            "columns_changed": self.columns_changed,
            "columns_required": self.columns_required,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SchemaChange:
        return cls(**{key: [str(item) for item in data.get(key) or []] for key in cls().to_json()})


def schema_change(before: Schema, after: Schema) -> SchemaChange:
    """What changed from `before` to `after`; a renamed column shows as dropped plus added."""
    change = SchemaChange()
    change.tables_added = sorted(set(after) - set(before))
    change.tables_dropped = sorted(set(before) - set(after))
    for table in sorted(set(before) & set(after)):
        old, new = before[table], after[table]
        for name in sorted(set(new) - set(old)):
            change.columns_added.append(f"{table}.{name}")
            if not new[name].nullable and new[name].default is None:
                change.columns_required.append(f"{table}.{name}")
        change.columns_dropped += [f"{table}.{name}" for name in sorted(set(old) - set(new))]
        for name in sorted(set(old) & set(new)):
            if old[name].type != new[name].type:
                change.columns_changed.append(
                    f"{table}.{name}: {old[name].type} -> {new[name].type}"
                )
            elif old[name].nullable and not new[name].nullable and new[name].default is None:
                change.columns_required.append(f"{table}.{name}")
    return change
