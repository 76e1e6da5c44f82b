"""docs/api.md's examples run as written, in order, in an app folder set up by `safehold init`
(a SQLite database and an uploads folder), through the public API only."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import safehold

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = re.findall(
    r"### \d\. .*?\n\n```python\n(.*?)```", (ROOT / "docs/api.md").read_text(), re.S
)


@pytest.fixture
def app(tmp_path: Path, cli_env: dict[str, str]) -> Path:
    folder = tmp_path / "shop"
    (folder / "uploads" / "2026").mkdir(parents=True)
    for number in range(20):
        (folder / "uploads" / "2026" / f"avatar-{number}.png").write_bytes(bytes([number]) * 3000)
    with sqlite3.connect(folder / "app.sqlite3") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.executemany("INSERT INTO users (email) VALUES (?)", [(f"u{i}@x",) for i in range(50)])
    db.close()
    init = subprocess.run(
        [sys.executable, "-m", "safehold", "init", "--yes", "--app", "shop"],
        cwd=folder, env=cli_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    return folder


def run_example(code: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def test_the_three_examples_run_as_written(app: Path, cli_env: dict[str, str]) -> None:
    assert len(EXAMPLES) == 3
    backup, restore, health = (run_example(code, app, cli_env) for code in EXAMPLES)
    assert backup.returncode == 0, backup.stderr
    assert "app: ok" in backup.stdout and "uploads: ok" in backup.stdout
    assert re.search(r"saved shop-prod-\d{4}-\d\d-\d\d-predeploy-release-42", backup.stdout)
    assert restore.returncode == 0, restore.stderr
    assert "20 file(s)" in restore.stdout and "refused: refusing to restore" in restore.stdout
    restored = sorted(p.name for p in (app / "restored-uploads").rglob("*.png"))
    assert restored == sorted(p.name for p in (app / "uploads").rglob("*.png"))
    assert health.returncode == 0, health.stderr
    assert "drill passed" in health.stdout and "local: 1 snapshot(s)" in health.stdout


def test_a_failing_call_raises_safehold_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(safehold.SafeholdError) as raised:
        safehold.load_plan(tmp_path / "safehold.toml")
    assert raised.value.hint and raised.value.exit_code != 0


def test_the_public_names_are_the_documented_ones() -> None:
    text = (ROOT / "docs/api.md").read_text()
    for name in safehold.__all__:
        if name != "__version__":
            assert f"`{name}" in text, f"{name} is exported but not documented"
            assert getattr(safehold, name) is not None
    with pytest.raises(AttributeError):
        _ = safehold.not_a_public_name  # type: ignore[attr-defined]
