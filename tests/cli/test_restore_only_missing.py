"""Restoring a files source into its live folder through the real CLI: `--only-missing` puts
back only what is gone (never overwriting, no --to-production needed), `--changed restore`
puts back the snapshot's copy of changed files (a production write: --to-production --yes,
evidence first), and a file newer than the snapshot's copy is never replaced without
`--overwrite-newer`; files added since the backup are never touched. A full restore onto
production says how many newer files it keeps before it asks for --yes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from tests.conftest import TEST_PASSWORD, RunCli

PLAN = """
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "1h"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
exclude = ["*.tmp"]
[[destinations]]
name = "local"
repository = "backups"
"""


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "shop"
    uploads = app / "uploads"
    (uploads / "sub").mkdir(parents=True)
    for number in range(1, 7):
        (uploads / f"a{number}.png").write_bytes(bytes([number]) * 3000)
    (uploads / "sub" / "s1.png").write_bytes(b"s1" * 500)
    (uploads / "sub" / "s2.png").write_bytes(b"s2" * 500)
    old = time.time() - 3600
    for path in uploads.rglob("*.png"):
        os.utime(path, (old, old))
    (app / "safehold.toml").write_text(PLAN)
    return app


def _run(run_cli: RunCli, app: Path, *args: str, expect: int = 0) -> str:
    result: subprocess.CompletedProcess[str] = run_cli("--plan", str(app / "safehold.toml"), *args)
    output = result.stdout + result.stderr
    assert result.returncode == expect, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    return result.stdout if expect == 0 else result.stderr


def test_only_missing_changed_and_newer_files(tmp_path: Path, run_cli: RunCli) -> None:
    app = _app(tmp_path)
    uploads = app / "uploads"
    live = str(uploads)
    _run(run_cli, app, "init")
    _run(run_cli, app, "backup", "--reason", "daily")
    daily = json.loads(_run(run_cli, app, "snapshots", "--json"))[-1]

    # The bad deploy: two files and a folder deleted, one overwritten now (newer than the
    # snapshot's copy), one overwritten with an OLDER mtime (changed, not newer), a new
    # upload, and a temp file the backup excludes.
    (uploads / "a1.png").unlink()
    (uploads / "a2.png").unlink()
    for name in ("s1.png", "s2.png"):
        (uploads / "sub" / name).unlink()
    (uploads / "sub").rmdir()
    (uploads / "a3.png").write_bytes(b"deploy wrote this")
    (uploads / "a4.png").write_bytes(b"older copy")
    older = time.time() - 7200
    os.utime(uploads / "a4.png", (older, older))
    (uploads / "new.png").write_bytes(b"uploaded after the backup")
    (uploads / "scratch.tmp").write_bytes(b"excluded")

    base = ("restore", "latest", "--source", "uploads", "--into", live)
    plan = json.loads(_run(run_cli, app, *base, "--only-missing", "--dry-run", "--json"))
    decided = {d["path"]: (d["action"], d["status"], d["newer"]) for d in plan["decisions"]}
    assert decided == {
        "a1.png": ("restore", "missing", False),
        "a2.png": ("restore", "missing", False),
        "sub": ("restore", "missing", False),
        "a3.png": ("keep", "changed", True),
        "a4.png": ("keep", "changed", False),
        "new.png": ("keep", "added", False),
    }
    assert plan["allowed"] is True and plan["production"] is True and plan["evidence"] is None
    assert plan["decision_counts"]["restore"] == 4 and plan["decision_counts"]["replace"] == 0
    text = _run(run_cli, app, *base, "--only-missing", "--dry-run")
    assert "restore 4 missing file(s), replace 0 changed file(s)" in text
    assert "keep 2 changed file(s) as they are (1 newer than the snapshot)" in text
    assert "keep 1 file(s) added since the backup" in text

    # --only-missing into production needs no --to-production: it overwrites nothing
    out = _run(run_cli, app, *base, "--only-missing")
    assert "restored uploads" in out
    assert (uploads / "a1.png").read_bytes() == bytes([1]) * 3000
    assert (uploads / "sub" / "s2.png").read_bytes() == b"s2" * 500
    assert (uploads / "a3.png").read_bytes() == b"deploy wrote this"
    assert (uploads / "a4.png").read_bytes() == b"older copy"
    assert (uploads / "new.png").read_bytes() == b"uploaded after the backup"
    assert (uploads / "scratch.tmp").exists()
    assert not list(uploads.glob(".safehold-restore-*"))
    assert len(json.loads(_run(run_cli, app, "snapshots", "--json"))) == 1  # no evidence needed

    # --changed restore replaces files: production, so it says what and asks for --yes
    refused = _run(run_cli, app, *base, "--changed", "restore", "--to-production", expect=1)
    assert "it would replace 1 file(s) changed since the snapshot" in refused
    assert "1 file(s) newer than the snapshot are kept (--overwrite-newer replaces them)" in refused
    assert (uploads / "a4.png").read_bytes() == b"older copy"
    _run(run_cli, app, *base, "--changed", "restore", "--to-production", "--yes")
    assert (uploads / "a4.png").read_bytes() == bytes([4]) * 3000  # the old version is back
    assert (uploads / "a3.png").read_bytes() == b"deploy wrote this"  # newer: never silently
    assert (uploads / "new.png").exists()
    snapshots = json.loads(_run(run_cli, app, "snapshots", "--json"))
    assert [s["reason"] for s in snapshots] == ["daily", "evidence"]  # evidence first

    # a full restore onto production keeps the newer file too, and says so before --yes
    refused = _run(run_cli, app, *base, "--to-production", expect=1)
    assert "1 file(s) newer than the snapshot are kept" in refused
    _run(run_cli, app, *base, "--to-production", "--yes")
    assert (uploads / "a3.png").read_bytes() == b"deploy wrote this"
    assert (uploads / "new.png").exists()

    # only with --overwrite-newer
    result = run_cli("--plan", str(app / "safehold.toml"), *base, "--to-production",
                     "--overwrite-newer", "--dry-run", "--json")  # fmt: skip
    assert result.returncode == 1, result.stderr  # exits as the real command would start
    dry = json.loads(result.stdout)
    assert dry["decision_counts"]["newer_replaced"] == 1 and dry["allowed"] is False
    _run(run_cli, app, *base, "--to-production", "--yes", "--overwrite-newer")
    assert (uploads / "a3.png").read_bytes() == bytes([3]) * 3000
    assert (uploads / "new.png").read_bytes() == b"uploaded after the backup"

    # `latest` is still the daily backup, not an evidence snapshot
    chosen = json.loads(_run(run_cli, app, *base, "--only-missing", "--dry-run", "--json"))
    assert chosen["snapshot"]["id"] == daily["id"]
    assert chosen["decision_counts"]["restore"] == 0  # nothing left to restore

    # bad combinations: one line, a hint, no traceback
    err = _run(run_cli, app, "restore", "latest", "--target", str(tmp_path / "t"),
               "--only-missing", expect=1)  # fmt: skip
    assert "live folder" in err and "hint:" in err
    err = _run(run_cli, app, *base[:-1], str(tmp_path / "elsewhere"), "--only-missing", expect=1)
    assert "is not one" in err and live in err
