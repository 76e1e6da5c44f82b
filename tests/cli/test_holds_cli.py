"""hold, unhold and holds through the real CLI; forget keeps a held snapshot, says why, and
does not remove it even with --force."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import RunCli


def test_hold_unhold_holds_and_forget(run_cli: RunCli, tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    src = tmp_path / "app"
    src.mkdir()
    (src / "data.txt").write_text("rows\n")

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = run_cli("-r", repo, *args)
        assert proc.returncode == expect, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc

    run("init")
    run("backup", str(src), "--reason", "daily")
    run("backup", str(src), "--reason", "incident", "--note", "ticket 42")  # held when taken
    run("backup", str(src), "--reason", "daily")
    snaps = json.loads(run("snapshots", "--json").stdout)
    first, incident, newest = (snap["id"] for snap in snaps)
    assert snaps[0]["name"] != snaps[2]["name"]  # same day, same reason: never the same name

    assert run("hold", first[:8], "--why", "audit 2026").stdout.startswith(f"held {first[:8]}")
    listed = json.loads(run("holds", "--json").stdout)
    assert {(hold["snapshot"], hold["why"]) for hold in listed} == {
        (incident, "incident snapshot: ticket 42"),
        (first, "audit 2026"),
    }
    assert all(hold["who"] and hold["when"] and hold["name"] for hold in listed)
    assert "audit 2026" in run("holds").stdout

    dry = run("forget", "--keep-last", "1", "--dry-run").stdout
    assert f"KEEP   {first[:8]}" in dry and "held: audit 2026" in dry
    assert "held: incident snapshot: ticket 42" in dry
    # named, with --force: still kept, and it says why
    named = run("forget", first[:8], "--force").stdout
    assert f"KEEP   {first[:8]}" in named and "held: audit 2026" in named
    assert "removed 0 snapshot(s)" in named
    run("forget", "--keep-last", "1", "--force", "--prune")
    left = {snap["id"] for snap in json.loads(run("snapshots", "--json").stdout)}
    assert left == {first, incident, newest}

    assert "released" in run("unhold", first[:8]).stdout
    assert "is not held" in run("unhold", first[:8], expect=1).stderr
    assert [hold["snapshot"] for hold in json.loads(run("holds", "--json").stdout)] == [incident]
    run("forget", "--keep-last", "1", "--force")
    left = {snap["id"] for snap in json.loads(run("snapshots", "--json").stdout)}
    assert left == {incident, newest}

    assert (
        "invalid reason 'Not A Word'"
        in run("backup", str(src), "--reason", "Not A Word", expect=1).stderr
    )
