"""The catalogue of findings: one rule id, and for each the why, the safer pattern and the undo.

One place holds the words, so the PostgreSQL and the MySQL readers only decide *which* rule a
statement breaks; they never phrase it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """A kind of change that code rollback alone cannot undo (or that blocks writes)."""

    id: str
    why: str
    safer: str
    undo: str
    blocks_rollback: bool = True


_RESTORE_TABLE = "restore {table} from the pre-deploy snapshot beside production, then copy back"
_RECOVER_ROWS = (
    "keep the pre-deploy snapshot; `safehold db recover SNAPSHOT --source DB --table {table}"
    " --changed restore` puts the old rows back"
)

RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "drop-table",
            "the table and its rows are gone; rolling the code back does not bring them back",
            "rename it aside (ALTER TABLE {table} RENAME TO {table}_retired) and drop it a release"
            " later, once nothing reads it",
            _RESTORE_TABLE,
        ),
        Rule(
            "drop-column",
            "the column's values are gone and the previous release still selects it",
            "expand/contract: stop reading {column} in one release, drop it in the next, after a"
            " snapshot",
            "restore {table} from the pre-deploy snapshot beside production and copy {column} back",
        ),
        Rule(
            "drop-column-still-read",
            "the previous release still reads {column} ({where}); after a code rollback it fails",
            "ship a release that no longer reads {column} first, then drop it",
            "re-add {column} and copy its values back from the pre-deploy snapshot",
        ),
        Rule(
            "rename-column",
            "the previous release reads the old name {column} and fails as soon as the code is"
            " rolled back",
            "add the new column, write both, backfill, switch reads, drop the old one a release"
            " later",
            "ALTER TABLE {table} RENAME COLUMN {new} TO {column}",
        ),
        Rule(
            "rename-table",
            "the previous release reads the old name {table} and fails as soon as the code is"
            " rolled back",
            "create the new table (or a view named {new}) and move readers over before renaming",
            "ALTER TABLE {new} RENAME TO {table}",
        ),
        Rule(
            "lossy-type-change",
            "values that do not fit {type} are cut or rejected, and the old values cannot be"
            " read back from the new column",
            "add a new column of type {type}, backfill it, switch reads, drop the old column later",
            "restore {table}.{column} from the pre-deploy snapshot",
        ),
        Rule(
            "not-null-without-default",
            "it fails on a table with rows, and the previous release's INSERTs that omit {column}"
            " fail after a code rollback",
            "add {column} with a DEFAULT (or nullable), backfill, then enforce NOT NULL",
            "ALTER TABLE {table} DROP COLUMN {column}",
        ),
        Rule(
            "set-not-null",
            "it scans all of {table} under an exclusive lock, and the previous release's INSERTs"
            " that leave {column} empty fail after a code rollback",
            "ADD CONSTRAINT ... CHECK ({column} IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT",
            "ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL",
        ),
        Rule(
            "blocking-index",
            "building the index blocks every write to {table} until it ends, minutes on a big"
            " table",
            "{safer_index}",
            "DROP INDEX {index}",
            blocks_rollback=False,
        ),
        Rule(
            "update-without-where",
            "it rewrites every row of {table}; the old values live only in the backup",
            "update in batches with a WHERE, after copying the rows to a side table",
            _RECOVER_ROWS,
        ),
        Rule(
            "delete-without-where",
            "it deletes every row of {table}; they live only in the backup",
            "delete in batches with a WHERE, after copying the rows to a side table",
            _RECOVER_ROWS,
        ),
        Rule(
            "truncate",
            "it empties {table}; the rows live only in the backup",
            "copy the rows to a side table first, or delete in batches",
            _RESTORE_TABLE,
        ),
        Rule(
            "drop-schema",
            "every table in schema {table} is gone; rolling the code back does not bring them back",
            "move the tables out or rename the schema aside, and drop it a release later",
            "restore the schema's tables from the pre-deploy snapshot",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One change with no way back, located in its file."""

    rule: str
    path: str
    line: int
    what: str
    why: str
    safer: str
    undo: str
    blocks_rollback: bool

    def one_line(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.rule}: {self.what} — {self.why}."
            f" Safer: {self.safer}. Undo: {self.undo}."
        )

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "path": self.path,
            "line": self.line,
            "what": self.what,
            "why": self.why,
            "safer": self.safer,
            "undo": self.undo,
            "blocks_rollback": self.blocks_rollback,
        }


@dataclass(frozen=True)
class Hit:
    """What a dialect reader found in one statement: the rule and the names to fill in."""

    rule: str
    what: str
    line: int
    names: dict[str, str]


def finding(hit: Hit, path: str) -> Finding:
    """Phrase a hit with its rule's words."""
    rule = RULES[hit.rule]
    names = _Names(hit.names)
    return Finding(
        rule=rule.id,
        path=path,
        line=hit.line,
        what=hit.what,
        why=rule.why.format_map(names),
        safer=rule.safer.format_map(names),
        undo=rule.undo.format_map(names),
        blocks_rollback=rule.blocks_rollback,
    )


class _Names(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return key


# ----- the findings both dialects share, phrased once ----------------------------------------


def drop_column(table: str, column: str, line: int) -> Hit:
    return Hit(
        "drop-column", f"DROP COLUMN {table}.{column}", line, {"table": table, "column": column}
    )


def rename_column(table: str, old: str, new: str, line: int) -> Hit:
    return Hit("rename-column", f"RENAME COLUMN {table}.{old} TO {new}", line,
               {"table": table, "column": old, "new": new})  # fmt: skip


def rename_table(old: str, new: str, line: int) -> Hit:
    return Hit("rename-table", f"RENAME TABLE {old} TO {new}", line, {"table": old, "new": new})


def not_null_without_default(table: str, column: str, line: int) -> Hit:
    what = f"ADD COLUMN {table}.{column} NOT NULL without a DEFAULT"
    return Hit("not-null-without-default", what, line, {"table": table, "column": column})


def without_where(rule: str, verb: str, table: str, line: int) -> Hit:
    return Hit(rule, f"{verb} {table} without WHERE", line, {"table": table})


def lossy_type(table: str, column: str, shown: str, statement: str, line: int) -> Hit:
    return Hit("lossy-type-change", f"{statement} {table}.{column} {shown}", line,
               {"table": table, "column": column, "type": shown})  # fmt: skip
