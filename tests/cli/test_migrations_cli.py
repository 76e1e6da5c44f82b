"""`safehold migrations lint` through the real CLI: exit codes a deploy script can use."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunCli

CORPUS = Path(__file__).parent.parent / "migrations" / "corpus"


def test_unsafe_migrations_exit_4_with_one_line_each(run_cli: RunCli) -> None:
    result = run_cli("migrations", "lint", str(CORPUS / "postgres" / "unsafe_contract.sql"))
    assert result.returncode == 4, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 9  # eight findings and the summary
    assert ": drop-column: DROP COLUMN shop_order.note — " in lines[0]
    assert " Safer: " in lines[0] and " Undo: " in lines[0]
    assert lines[-1].startswith("8 change(s) with no way back in 1 file(s)")


def test_safe_migrations_exit_0(run_cli: RunCli, tmp_path: Path) -> None:
    safe = sorted(str(path) for path in (CORPUS / "postgres").glob("safe*.sql"))
    accepted = tmp_path / "0009_drop_carts.sql"
    accepted.write_text("DROP TABLE carts;\n")
    result = run_cli("migrations", "lint", *safe, str(accepted), "--allow", "drop-table")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no change without a way back in {len(safe) + 1} file(s), 1 allowed" in result.stdout


def test_stdin_json_and_mysql(run_cli: RunCli) -> None:
    sql = "ALTER TABLE orders ADD COLUMN note TEXT;\nALTER TABLE orders DROP COLUMN title;\n"
    result = run_cli("migrations", "lint", "--dialect", "mysql", "--json", "-", input=sql)
    assert result.returncode == 4, result.stderr
    data = json.loads(result.stdout)
    assert data["exit_code"] == 4
    assert data["files"] == ["<stdin>"]
    assert [(item["line"], item["rule"]) for item in data["findings"]] == [(2, "drop-column")]


def test_bad_sql_is_one_clear_line_without_traceback(run_cli: RunCli, tmp_path: Path) -> None:
    bad = tmp_path / "0003.sql"
    bad.write_text("ALTER TABLE orders\n  DROPP COLUMN x;\n")
    result = run_cli("migrations", "lint", str(bad))
    assert result.returncode == 1
    assert f"error: {bad}:2: cannot parse as postgres SQL" in result.stderr
    assert "hint: fix the statement, or pass --dialect mysql" in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_lists_every_rule(run_cli: RunCli) -> None:
    result = run_cli("migrations", "rules", "--json")
    assert result.returncode == 0
    assert {rule["rule"] for rule in json.loads(result.stdout)} >= {"drop-column", "truncate"}
