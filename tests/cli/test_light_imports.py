"""A command that names `-r` and no plan does not load the plan's pydantic models, nor the
incident use cases: they cost every backup and restore ~0.2 CPU-s of start-up. A quiet one
prints nothing through rich, so rich does not load either; a backup does not load the restore
path nor the other kinds of plan source. Each probe runs real commands in a fresh
interpreter, the way `python -m safehold` runs them (the early key derivation first, then
cli/main.py), and lists what they imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safehold.cli import main
from tests.conftest import RunCli

SRC = str(Path(main.__file__).resolve().parents[2])
HEAVY = (
    "pydantic",
    "pydantic_core",
    "safehold.plan.models",
    "safehold.plan.loader",
    "safehold.plan.operations",
    "safehold.app.incident",
    "safehold.cli.incident_commands",
    "rich",
    "rich.console",
    "rich.progress",
    "difflib",  # click's suggestions for an option it failed to match (cli/argv.py)
)
# what a backup of paths does not need on top (a restore does)
NOT_FOR_BACKUP = (
    "safehold.cli.restore_commands",
    "safehold.app.restore",
    "safehold.app.scope",
    "safehold.app.plan_backup",
    "safehold.fs.restorer",
    "safehold.sources.from_plan",
    "safehold.sources.bucket",
    "safehold.sources.secrets",
    "safehold.sources.sqlite",
    "pyrage",
    "sqlite3",
)
_PROBE = f"""
import importlib, json, os, sys
runs = json.loads(sys.argv[1])
importlib.import_module("safehold.cli.early_key").start(runs[0], os.environ)
from safehold.cli.main import main
codes = [main(argv) for argv in runs]
heavy = sorted(m for m in sys.modules if m in {set(HEAVY)!r})
restore = sorted(m for m in sys.modules if m in {set(NOT_FOR_BACKUP)!r})
print(json.dumps({{"codes": codes, "heavy": heavy, "restore": restore}}))
"""


def _probe(runs: list[list[str]], env: dict[str, str], cwd: Path) -> dict[str, list[object]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(runs)],
        capture_output=True, text=True, check=False, cwd=cwd,
        env={**env, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report: dict[str, list[object]] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    return root


def test_a_repository_backup_and_restore_do_not_load_the_plan_models(
    tmp_path: Path, run_cli: RunCli, cli_env: dict[str, str]
) -> None:
    repo, data = tmp_path / "repo", _tree(tmp_path / "data")
    password_file = tmp_path / "password"
    password_file.write_text(cli_env["SAFEHOLD_PASSWORD"] + "\n")
    env = {k: v for k, v in cli_env.items() if k != "SAFEHOLD_PASSWORD"}
    created = run_cli("-r", str(repo), "init")
    assert created.returncode == 0, created.stderr
    base = ["-r", str(repo), "--password-file", str(password_file)]
    backup = [*base, "backup", str(data), "--quiet"]
    restore = [*base, "restore", "latest", "--target", str(tmp_path / "out"), "--quiet"]
    listing = [*base, "snapshots", "--json"]
    # a first backup and an unchanged re-backup; a restore; a listing: each a fresh process
    for runs in ([backup, backup], [restore], [listing]):
        report = _probe(runs, env, tmp_path)
        assert report["codes"] == [0] * len(runs)
        assert report["heavy"] == [], f"`{runs[0][4]}` imported {report['heavy']}"
        if runs[0] is backup:
            assert report["restore"] == [], f"a backup imported {report['restore']}"
        if runs[0] is restore:  # the control: the probe sees the restore path when used
            assert "safehold.fs.restorer" in report["restore"]
    restored = tmp_path / "out" / str(data).lstrip("/")
    assert (restored / "sub" / "b.bin").read_bytes() == (data / "sub" / "b.bin").read_bytes()


def test_a_plan_backup_still_validates_the_plan_with_pydantic(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The control: the probe sees the models when a plan is used (and a plan still loads)."""
    _tree(tmp_path / "data")
    (tmp_path / "safehold.toml").write_text(
        'app = "shop"\nenv = "test"\n[targets]\nrpo = "1h"\nrto = "1h"\n'
        '[[sources]]\nname = "files"\ntype = "files"\npaths = ["data"]\n'
        '[[destinations]]\nname = "local"\nrepository = "repo"\n'
    )
    report = _probe([["init"], ["backup", "--quiet"]], cli_env, tmp_path)
    assert report["codes"] == [0, 0]
    assert {"pydantic", "safehold.plan.models", "safehold.plan.loader"} <= set(report["heavy"])


def test_the_key_derivation_starts_before_anything_heavy_is_imported() -> None:
    """What `python -m safehold` loads before cli/early_key.py starts scrypt is on every
    command's critical path: the standard library's basics only."""
    probe = (
        "import sys\n"
        "import safehold.cli.entry, safehold.cli.early_key\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('cryptography', 'zstandard', 'dataclasses', 'pathlib', 'subprocess', 'click')\n"
        "    or m in ('safehold.pitr.spoolfile', 'safehold.repo.key', 'safehold.repo.crypto'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip
    assert result.stdout.strip() == ""
