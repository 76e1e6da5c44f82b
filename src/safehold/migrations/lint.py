"""Lint migration files: read them, find the changes with no way back, honour allow comments.

An allow comment, `-- safehold: allow drop-column` on the lines just above a statement (or at
the end of its first line), accepts that rule for that statement: the author has read the
finding and kept the undo note. `--previous-code DIR` adds the expand/contract check: a column
dropped here that the previous release's code still names.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safehold.errors import SafeholdError, UsageError
from safehold.migrations import mysql, pg
from safehold.migrations.rules import RULES, Finding, Hit, finding

Dialect = Literal["postgres", "mysql"]
DIALECTS: tuple[Dialect, ...] = ("postgres", "mysql")

_ALLOW = re.compile(r"(?:--|#)\s*safehold:\s*allow\s+([a-z0-9 ,-]+)", re.IGNORECASE)
_SKIPPED_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", "migrations"}
_CODE_SUFFIXES = {
    ".py",
    ".rb",
    ".js",
    ".ts",
    ".tsx",
    ".jsx",
    ".go",
    ".java",
    ".kt",
    ".php",
    ".ex",
    ".exs",
    ".cs",
    ".rs",
    ".sql",
    ".html",
    ".erb",
    ".prisma",
    ".graphql",
}
_MAX_CODE_FILE = 1 << 20
_MAX_PLACES = 3


class MigrationParseError(SafeholdError):
    """A migration file is not SQL the parser can read."""


@dataclass
class LintReport:
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    allowed: list[Finding] = field(default_factory=list)

    @property
    def blocks_rollback(self) -> bool:
        return any(item.blocks_rollback for item in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "files": self.files,
            "findings": [item.to_json() for item in self.findings],
            "allowed": [item.to_json() for item in self.allowed],
        }


def lint_paths(
    paths: Sequence[str],
    dialect: Dialect = "postgres",
    allow: Iterable[str] = (),
    previous_code: Path | None = None,
) -> LintReport:
    """Lint every file named (a directory means its *.sql files; `-` is standard input)."""
    accepted = set(allow)
    unknown = accepted - set(RULES)
    if unknown:
        raise UsageError(
            f"unknown rule {', '.join(sorted(unknown))}",
            hint=f"the rules are: {', '.join(RULES)}",
        )
    report = LintReport()
    for name, text in _read_all(paths):
        report.files.append(name)
        for hit in _hits(name, text, dialect):
            if hit.rule == "drop-column" and previous_code is not None:
                _still_read(hit, previous_code, name, report, accepted, text)
            _sort(finding(hit, name), text, accepted, report)
    return report


def _hits(name: str, text: str, dialect: Dialect) -> list[Hit]:
    try:
        return pg.read(text) if dialect == "postgres" else mysql.read(text)
    except (pg.PgParseError, mysql.MySQLParseError) as error:
        other = "mysql" if dialect == "postgres" else "postgres"
        raise MigrationParseError(
            f"{name}:{error.line}: cannot parse as {dialect} SQL: {error}",
            hint=f"fix the statement, or pass --dialect {other} if this is {other} SQL",
        ) from None


def _still_read(
    hit: Hit, root: Path, name: str, report: LintReport, accepted: set[str], text: str
) -> None:
    places = code_places(root, hit.names["column"])
    if not places:
        return
    still = Hit(
        "drop-column-still-read",
        f"DROP COLUMN {hit.names['table']}.{hit.names['column']} that the previous release reads",
        hit.line,
        {**hit.names, "where": ", ".join(places)},
    )
    _sort(finding(still, name), text, accepted, report)


def _sort(item: Finding, text: str, accepted: set[str], report: LintReport) -> None:
    if item.rule in accepted or item.rule in allowed_at(text, item.line):
        report.allowed.append(item)
    else:
        report.findings.append(item)


def allowed_at(text: str, line: int) -> set[str]:
    """The rules allowed by comments on `line` or on the comment lines right above it."""
    lines = text.splitlines()
    rules: set[str] = set()
    index = line - 1
    if 0 <= index < len(lines):
        rules |= _allow_comment(lines[index])
    index -= 1
    while 0 <= index < len(lines) and _is_comment_or_blank(lines[index]):
        rules |= _allow_comment(lines[index])
        index -= 1
    return rules


def _allow_comment(line: str) -> set[str]:
    match = _ALLOW.search(line)
    if not match:
        return set()
    return {part.strip() for part in re.split(r"[ ,]+", match.group(1)) if part.strip()}


def _is_comment_or_blank(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith(("--", "#", "/*", "*"))


def code_places(root: Path, identifier: str) -> list[str]:
    """Where the code under `root` names `identifier` as a word (first few places)."""
    pattern = re.compile(rf"\b{re.escape(identifier)}\b")
    places: list[str] = []
    for path in sorted(_code_files(root)):
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if pattern.search(line):
                places.append(f"{path.relative_to(root)}:{number}")
                break
        if len(places) >= _MAX_PLACES:
            break
    return places


def _code_files(root: Path) -> Iterable[Path]:
    for path in root.rglob("*"):
        if any(part in _SKIPPED_DIRS for part in path.relative_to(root).parts[:-1]):
            continue
        if (
            path.suffix in _CODE_SUFFIXES
            and path.is_file()
            and path.stat().st_size <= _MAX_CODE_FILE
        ):
            yield path


def _read_all(paths: Sequence[str]) -> list[tuple[str, str]]:
    if not paths:
        raise UsageError(
            "no migration named", hint="give SQL files, a folder of them, or - for stdin"
        )
    texts: list[tuple[str, str]] = []
    for name in paths:
        if name == "-":
            texts.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(path.rglob("*.sql"))
            if not files:
                raise UsageError(
                    f"{name}: no .sql file in this folder",
                    hint="print the SQL first (manage.py sqlmigrate APP N, alembic upgrade --sql)"
                    " and lint that",
                )
            texts.extend((str(file), _read(file)) for file in files)
        elif path.is_file():
            texts.append((name, _read(path)))
        else:
            raise UsageError(f"{name}: no such file or folder", hint="check the path")
    return texts


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(
            f"{path}: cannot read: {error}", hint="lint a readable UTF-8 SQL file"
        ) from None
