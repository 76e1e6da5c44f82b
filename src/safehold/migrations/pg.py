"""PostgreSQL migrations, read with pglast (libpg_query, PostgreSQL's own parser)."""

from __future__ import annotations

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from safehold.migrations import rules
from safehold.migrations.rules import Hit
from safehold.migrations.sqltext import char_offset, line_of

# Targets no value of a usual source type is cut to. Any other target "may" lose data: we
# cannot see the old type from the migration alone, so we name the risk rather than guess.
_WIDE_TYPES = {"text", "int8", "float8", "jsonb", "timestamptz", "numeric", "varchar", "bpchar"}
_NEED_NO_TYPMOD = {"numeric", "varchar", "bpchar"}


class PgParseError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def read(text: str) -> list[Hit]:
    """Every finding in `text`, a PostgreSQL migration (a file or `sqlmigrate` output)."""
    try:
        statements = parse_sql(text)
    except ParseError as error:
        message, location = (*error.args, 0)[:2] if error.args else ("syntax error", 0)
        offset = char_offset(text, location if isinstance(location, int) else 0)
        raise PgParseError(str(message), text.count("\n", 0, offset) + 1) from None
    hits: list[Hit] = []
    for raw in statements:
        if raw.stmt is None:
            continue
        line = line_of(text, char_offset(text, raw.stmt_location or 0))
        hits.extend(_statement_hits(raw.stmt, line))
    return hits


def _statement_hits(statement: ast.Node, line: int) -> list[Hit]:
    if isinstance(statement, ast.AlterTableStmt):
        return _alter_table(statement, line)
    if isinstance(statement, ast.DropStmt):
        return _drop(statement, line)
    if isinstance(statement, ast.RenameStmt):
        return _rename(statement, line)
    if isinstance(statement, ast.IndexStmt) and not statement.concurrent:
        table = _relname(statement.relation)
        index = statement.idxname or f"the new index on {table}"
        return [
            Hit(
                "blocking-index",
                f"CREATE INDEX {statement.idxname or ''} ON {table} without CONCURRENTLY".replace(
                    "  ", " "
                ),
                line,
                {
                    "table": table,
                    "index": index,
                    "safer_index": "CREATE INDEX CONCURRENTLY (outside a transaction block)",
                },
            )
        ]
    if isinstance(statement, ast.UpdateStmt) and statement.whereClause is None:
        table = _relname(statement.relation)
        return [rules.without_where("update-without-where", "UPDATE", table, line)]
    if isinstance(statement, ast.DeleteStmt) and statement.whereClause is None:
        table = _relname(statement.relation)
        return [rules.without_where("delete-without-where", "DELETE FROM", table, line)]
    if isinstance(statement, ast.TruncateStmt):
        tables = ", ".join(_relname(relation) for relation in statement.relations or ())
        return [Hit("truncate", f"TRUNCATE {tables}", line, {"table": tables})]
    return []


def _alter_table(statement: ast.AlterTableStmt, line: int) -> list[Hit]:
    table = _relname(statement.relation)
    hits: list[Hit] = []
    for command in statement.cmds or ():
        if not isinstance(command, ast.AlterTableCmd):
            continue
        column = command.name or ""
        names = {"table": table, "column": column}
        kind = command.subtype
        if kind == enums.AlterTableType.AT_DropColumn:
            hits.append(rules.drop_column(table, column, line))
        elif kind == enums.AlterTableType.AT_AlterColumnType and isinstance(
            command.def_, ast.ColumnDef
        ):
            hits.extend(_type_change(command.def_, table, column, line))
        elif kind == enums.AlterTableType.AT_SetNotNull:
            hits.append(Hit("set-not-null", f"SET NOT NULL on {table}.{column}", line, names))
        elif kind == enums.AlterTableType.AT_AddColumn and isinstance(command.def_, ast.ColumnDef):
            hits.extend(_added_column(command.def_, table, line))
    return hits


def _type_change(definition: ast.ColumnDef, table: str, column: str, line: int) -> list[Hit]:
    type_name = _type_name(definition.typeName)
    has_typmod = bool(definition.typeName and definition.typeName.typmods)
    widening = type_name in _WIDE_TYPES and not (type_name in _NEED_NO_TYPMOD and has_typmod)
    if widening and definition.raw_default is None:
        return []
    shown = _shown_type(definition.typeName)
    using = " with USING" if definition.raw_default is not None else ""
    return [
        Hit(
            "lossy-type-change",
            f"ALTER COLUMN {table}.{column} TYPE {shown}{using}",
            line,
            {"table": table, "column": column, "type": shown},
        )
    ]


def _added_column(definition: ast.ColumnDef, table: str, line: int) -> list[Hit]:
    kinds = {constraint.contype for constraint in definition.constraints or ()}
    not_null = enums.ConstrType.CONSTR_NOTNULL in kinds or enums.ConstrType.CONSTR_PRIMARY in kinds
    has_default = (
        enums.ConstrType.CONSTR_DEFAULT in kinds
        or enums.ConstrType.CONSTR_IDENTITY in kinds
        or enums.ConstrType.CONSTR_GENERATED in kinds
    )
    if not_null and not has_default:
        column = definition.colname or ""
        return [rules.not_null_without_default(table, column, line)]
    return []


def _drop(statement: ast.DropStmt, line: int) -> list[Hit]:
    if statement.removeType == enums.ObjectType.OBJECT_TABLE:
        rule, label = "drop-table", "DROP TABLE"
    elif statement.removeType == enums.ObjectType.OBJECT_SCHEMA:
        rule, label = "drop-schema", "DROP SCHEMA"
    else:
        return []
    hits = []
    for target in statement.objects or ():
        name = _dotted(target)
        hits.append(Hit(rule, f"{label} {name}", line, {"table": name}))
    return hits


def _rename(statement: ast.RenameStmt, line: int) -> list[Hit]:
    table = _relname(statement.relation) if statement.relation else ""
    if statement.renameType == enums.ObjectType.OBJECT_COLUMN:
        column = statement.subname or ""
        return [rules.rename_column(table, column, statement.newname or "", line)]
    if statement.renameType == enums.ObjectType.OBJECT_TABLE:
        return [rules.rename_table(table, statement.newname or "", line)]
    return []


def _relname(relation: ast.RangeVar | None) -> str:
    if relation is None:
        return "?"
    if relation.schemaname:
        return f"{relation.schemaname}.{relation.relname}"
    return str(relation.relname)


def _dotted(target: object) -> str:
    if isinstance(target, ast.String):
        return str(target.sval)
    if isinstance(target, tuple | list):
        return ".".join(str(part.sval) for part in target if isinstance(part, ast.String))
    return str(target)


def _type_name(type_name: ast.TypeName | None) -> str:
    if type_name is None or not type_name.names:
        return ""
    last = type_name.names[-1]
    return str(last.sval) if isinstance(last, ast.String) else ""


def _shown_type(type_name: ast.TypeName | None) -> str:
    name = _type_name(type_name)
    if type_name is None or not type_name.typmods:
        return name
    mods = []
    for mod in type_name.typmods:
        value = getattr(getattr(mod, "val", None), "ival", None)
        mods.append(str(value) if value is not None else "?")
    return f"{name}({','.join(mods)})"
