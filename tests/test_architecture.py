"""The layer contract in pyproject.toml holds, and it really catches what it is there to catch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(source_root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "src"


def test_the_tree_keeps_the_contract(tmp_path: Path) -> None:
    result = lint(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_an_upward_import_inside_a_function_breaks_the_layers(
    tree_copy: Path, tmp_path: Path
) -> None:
    pack = tree_copy / "safehold" / "repo" / "pack.py"
    pack.write_text(
        pack.read_text() + "\n\ndef _sneaky() -> None:\n    from safehold.cli import main  # noqa\n"
    )
    result = lint(tree_copy, tmp_path)
    assert result.returncode != 0
    assert "safehold.repo.pack -> safehold.cli.main" in result.stdout


def test_a_circle_between_two_files_breaks_the_acyclic_contract(
    tree_copy: Path, tmp_path: Path
) -> None:
    pack = tree_copy / "safehold" / "repo" / "pack.py"
    pack.write_text(pack.read_text() + "\nfrom safehold.repo.packer import Packer  # noqa\n")
    result = lint(tree_copy, tmp_path)
    assert result.returncode != 0
    assert "No cycles are allowed in safehold.repo" in result.stdout
