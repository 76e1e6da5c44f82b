"""MySQL/MariaDB migrations, read with sqlglot's MySQL dialect.

Each statement is parsed on its own, so a parse error names its line. InnoDB builds indexes
online by default (ALGORITHM=INPLACE, LOCK=NONE), so only an index asked to lock or copy is a
finding here.
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import ParseError, TokenError

from safehold.migrations import rules
from safehold.migrations.rules import Hit

logging.getLogger("sqlglot").setLevel(logging.CRITICAL)

_WIDE_TYPES = {
    exp.DataType.Type.TEXT,
    exp.DataType.Type.MEDIUMTEXT,
    exp.DataType.Type.LONGTEXT,
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.DOUBLE,
    exp.DataType.Type.JSON,
}
_RENAME_TABLE = re.compile(r"^\s*TABLE\s+`?([\w.]+)`?\s+TO\s+`?([\w.]+)`?", re.IGNORECASE)


class MySQLParseError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def read(text: str) -> list[Hit]:
    """Every finding in `text`, a MySQL or MariaDB migration."""
    hits: list[Hit] = []
    for line, statement_text in _statements(text):
        try:
            parsed = sqlglot.parse_one(statement_text, read="mysql")
        except ParseError as error:
            message = str(error).splitlines()[0]
            raise MySQLParseError(message, line) from None
        hits.extend(_statement_hits(parsed, line))
    return hits


def _statements(text: str) -> list[tuple[int, str]]:
    try:
        tokens = sqlglot.tokenize(text, read="mysql")
    except TokenError as error:
        raise MySQLParseError(str(error).splitlines()[0], 1) from None
    statements: list[tuple[int, str]] = []
    start: int | None = None
    line = 1
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if start is not None:
                statements.append((line, text[start : token.start]))
            start = None
            continue
        if start is None:
            start, line = token.start, token.line
    if start is not None:
        statements.append((line, text[start:]))
    return statements


def _statement_hits(statement: exp.Expr, line: int) -> list[Hit]:
    if isinstance(statement, exp.Alter):
        return _alter(statement, line)
    if isinstance(statement, exp.Drop):
        kind = (statement.args.get("kind") or "").upper()
        rule = {"TABLE": "drop-table", "SCHEMA": "drop-schema", "DATABASE": "drop-schema"}.get(kind)
        if rule is None:
            return []
        return [
            Hit(rule, f"DROP {kind} {target.sql('mysql')}", line, {"table": target.sql("mysql")})
            for target in statement.args.get("tables") or statement.expressions or [statement.this]
            if target is not None
        ]
    if isinstance(statement, exp.Update) and statement.args.get("where") is None:
        table = statement.this.sql("mysql")
        return [rules.without_where("update-without-where", "UPDATE", table, line)]
    if isinstance(statement, exp.Delete) and statement.args.get("where") is None:
        table = statement.this.sql("mysql")
        return [rules.without_where("delete-without-where", "DELETE FROM", table, line)]
    if isinstance(statement, exp.TruncateTable):
        tables = ", ".join(table.sql("mysql") for table in statement.expressions)
        return [Hit("truncate", f"TRUNCATE {tables}", line, {"table": tables})]
    if isinstance(statement, exp.Create) and (statement.args.get("kind") or "").upper() == "INDEX":
        return []
    if isinstance(statement, exp.Command):
        return _command(statement, line)
    return []


def _command(statement: exp.Command, line: int) -> list[Hit]:
    """Statements sqlglot keeps as text: RENAME TABLE, and CREATE INDEX with lock options."""
    keyword = str(statement.this).upper()
    rest = statement.expression.name if statement.expression is not None else ""
    if keyword == "RENAME":
        match = _RENAME_TABLE.match(rest)
        if match:
            old, new = match.groups()
            return [rules.rename_table(old, new, line)]
    if keyword == "CREATE" and re.search(
        r"\bLOCK\s*=\s*(SHARED|EXCLUSIVE)\b|\bALGORITHM\s*=\s*COPY\b", rest, re.I
    ):
        table = re.search(r"\bON\s+`?([\w.]+)`?", rest, re.I)
        name = table.group(1) if table else "?"
        return [_locking_index(name, line)]
    return []


def _alter(statement: exp.Alter, line: int) -> list[Hit]:
    table = statement.this.sql("mysql") if statement.this is not None else "?"
    hits: list[Hit] = []
    for action in statement.args.get("actions") or ():
        if isinstance(action, exp.Drop) and (action.args.get("kind") or "").upper() == "COLUMN":
            for column in action.expressions or [action.this]:
                name = column.name if column is not None else "?"
                hits.append(rules.drop_column(table, name, line))
        elif isinstance(action, exp.RenameColumn):
            old, new = action.this.name, action.args["to"].name
            hits.append(_rename_column(table, old, new, line))
        elif isinstance(action, exp.AlterRename):
            new = action.this.sql("mysql")
            hits.append(rules.rename_table(table, new, line))
        elif isinstance(action, exp.ModifyColumn):
            hits.extend(_modify(action, table, line))
        elif isinstance(action, exp.ColumnDef):
            hits.extend(_added_column(action, table, line))
    if _asks_for_lock(statement) and any(
        isinstance(action, exp.AddConstraint) for action in statement.args.get("actions") or ()
    ):
        hits.append(_locking_index(table, line))
    return hits


def _rename_column(table: str, old: str, new: str, line: int) -> Hit:
    return rules.rename_column(table, old, new, line)


def _modify(action: exp.ModifyColumn, table: str, line: int) -> list[Hit]:
    definition = action.this
    column = definition.name
    hits: list[Hit] = []
    renamed_from = action.args.get("rename_from")
    if renamed_from is not None and renamed_from.name != column:
        hits.append(_rename_column(table, renamed_from.name, column, line))
        column = renamed_from.name
    kind = definition.args.get("kind")
    if isinstance(kind, exp.DataType) and kind.this not in _WIDE_TYPES:
        shown = kind.sql("mysql")
        hits.append(rules.lossy_type(table, column, shown, "MODIFY COLUMN", line))
    return hits


def _added_column(definition: exp.ColumnDef, table: str, line: int) -> list[Hit]:
    constraints = [constraint.args.get("kind") for constraint in definition.constraints]
    not_null = any(
        isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null")
        for kind in constraints
    )
    has_default = any(
        isinstance(
            kind,
            exp.DefaultColumnConstraint
            | exp.AutoIncrementColumnConstraint
            | exp.ComputedColumnConstraint,
        )
        for kind in constraints
    )
    if not_null and not has_default:
        column = definition.name
        return [rules.not_null_without_default(table, column, line)]
    return []


def _asks_for_lock(statement: exp.Alter) -> bool:
    for option in statement.args.get("options") or ():
        value = option.this.name.upper() if option.this is not None else ""
        if isinstance(option, exp.LockProperty) and value in {"SHARED", "EXCLUSIVE"}:
            return True
        if isinstance(option, exp.AlgorithmProperty) and value == "COPY":
            return True
    return False


def _locking_index(table: str, line: int) -> Hit:
    return Hit(
        "blocking-index",
        f"index build on {table} with a lock or table copy asked for",
        line,
        {
            "table": table,
            "index": "the new index",
            "safer_index": "leave InnoDB's online build: ALGORITHM=INPLACE, LOCK=NONE",
        },
    )
