"""The migration lint against a corpus: every expected finding exactly, none on the safe files.

Each unsafe corpus file marks the statement after it with `-- expect: RULE [RULE...]`; the
test reads those marks, so the corpus and its expectations cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safehold.errors import UsageError
from safehold.migrations.lint import MigrationParseError, allowed_at, lint_paths

CORPUS = Path(__file__).parent / "corpus"
_EXPECT = re.compile(r"--\s*expect:\s*(.+)$")


def expected(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    marks: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = _EXPECT.search(line)
        if not match:
            continue
        statement = index + 1
        while lines[statement].strip().startswith("--") or not lines[statement].strip():
            statement += 1
        marks.extend((statement + 1, rule) for rule in match.group(1).split())
    return sorted(marks)


def corpus(dialect: str, kind: str) -> list[Path]:
    return sorted((CORPUS / dialect).glob(f"{kind}*.sql"))


@pytest.mark.parametrize(
    ("dialect", "path"),
    [(d, p) for d in ("postgres", "mysql") for p in corpus(d, "unsafe")],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_each_unsafe_change_is_found_exactly(dialect: str, path: Path) -> None:
    report = lint_paths([str(path)], dialect)  # type: ignore[arg-type]
    found = sorted((item.line, item.rule) for item in report.findings)
    assert found == expected(path)
    assert expected(path), "an unsafe corpus file must expect something"


@pytest.mark.parametrize(
    ("dialect", "path"),
    [(d, p) for d in ("postgres", "mysql") for p in corpus(d, "safe")],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_safe_migrations_give_no_false_alarm(dialect: str, path: Path) -> None:
    report = lint_paths([str(path)], dialect)  # type: ignore[arg-type]
    assert [item.one_line() for item in report.findings] == []


def test_a_finding_is_one_line_with_why_safer_and_undo() -> None:
    report = lint_paths([str(CORPUS / "postgres" / "unsafe_contract.sql")])
    drop = next(item for item in report.findings if item.rule == "drop-column")
    line = drop.one_line()
    assert "\n" not in line
    assert line.startswith(f"{CORPUS / 'postgres' / 'unsafe_contract.sql'}:6: drop-column: ")
    assert "DROP COLUMN shop_order.note" in line
    assert "previous release" in drop.why
    assert "expand/contract" in drop.safer
    assert "pre-deploy snapshot" in drop.undo
    assert drop.blocks_rollback


def test_index_locks_do_not_block_rollback_but_are_reported() -> None:
    report = lint_paths([str(CORPUS / "postgres" / "unsafe_data.sql")])
    index = next(item for item in report.findings if item.rule == "blocking-index")
    assert not index.blocks_rollback
    assert "CONCURRENTLY" in index.safer


def test_allow_comment_accepts_that_rule_for_that_statement(tmp_path: Path) -> None:
    sql = tmp_path / "m.sql"
    sql.write_text(
        "-- we copied the column to orders_archive first\n"
        "-- safehold: allow drop-column\n"
        "ALTER TABLE orders DROP COLUMN note;\n"
        "ALTER TABLE orders DROP COLUMN title;\n"
        "DELETE FROM carts; -- safehold: allow delete-without-where\n"
    )
    report = lint_paths([str(sql)])
    assert [(item.line, item.rule) for item in report.findings] == [(4, "drop-column")]
    assert [(item.line, item.rule) for item in report.allowed] == [
        (3, "drop-column"),
        (5, "delete-without-where"),
    ]
    assert allowed_at(sql.read_text(), 3) == {"drop-column"}


def test_allow_option_and_unknown_rules(tmp_path: Path) -> None:
    sql = tmp_path / "m.sql"
    sql.write_text("DROP TABLE carts;\n")
    assert lint_paths([str(sql)], allow=["drop-table"]).findings == []
    with pytest.raises(UsageError, match="unknown rule drop-tabel"):
        lint_paths([str(sql)], allow=["drop-tabel"])


def test_previous_code_that_still_reads_a_dropped_column(tmp_path: Path) -> None:
    code = tmp_path / "previous"
    (code / "shop" / "migrations").mkdir(parents=True)
    (code / "shop" / "models.py").write_text("class Order:\n    title = 1\n    note = 2\n")
    (code / "shop" / "migrations" / "0001_initial.py").write_text("fields = ['legacy']\n")
    sql = tmp_path / "m.sql"
    sql.write_text(
        "ALTER TABLE shop_order DROP COLUMN note;\nALTER TABLE shop_order DROP COLUMN legacy;\n"
    )
    report = lint_paths([str(sql)], previous_code=code)
    rules = sorted((item.line, item.rule) for item in report.findings)
    assert rules == [(1, "drop-column"), (1, "drop-column-still-read"), (2, "drop-column")]
    still = next(item for item in report.findings if item.rule == "drop-column-still-read")
    assert "shop/models.py:3" in still.why


def test_a_folder_lints_its_sql_files_and_parse_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "0001.sql").write_text("CREATE TABLE t (id int);\n")
    (tmp_path / "0002.sql").write_text("CREATE TABLE u (id int);\nALTER TABLE t DROPP COLUMN x;\n")
    with pytest.raises(MigrationParseError) as caught:
        lint_paths([str(tmp_path)])
    assert f"{tmp_path / '0002.sql'}:2: cannot parse as postgres SQL" in caught.value.message
    assert "--dialect mysql" in caught.value.hint
    with pytest.raises(UsageError, match="no such file"):
        lint_paths([str(tmp_path / "missing.sql")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"no \.sql file"):
        lint_paths([str(empty)])
