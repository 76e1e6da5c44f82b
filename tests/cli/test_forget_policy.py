"""`forget` with a retention policy: dry-run explains every decision; the safeguards hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunCli


def _snapshot_ids(run_cli: RunCli, *args: str) -> list[str]:
    listing = run_cli(*args, "snapshots", "--json")
    assert listing.returncode == 0, listing.stderr
    return [s["id"] for s in json.loads(listing.stdout)]


def test_policy_dry_run_then_forget_with_a_plan(tmp_path: Path, run_cli: RunCli) -> None:
    app = tmp_path / "app"
    (app / "uploads").mkdir(parents=True)
    (app / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1h"
rto = "1h"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "local"
repository = "{app / "repo"}"
[retention]
keep_last = 2
"""
    )
    plan = ("--plan", str(app / "safehold.toml"))
    assert run_cli(*plan, "init").returncode == 0
    for number in range(4):
        (app / "uploads" / f"f{number}.txt").write_text(f"version {number}\n")
        reason = "predeploy" if number == 0 else "daily"
        assert run_cli(*plan, "backup", "--reason", reason).returncode == 0
    ids = _snapshot_ids(run_cli, *plan)

    dry = run_cli(*plan, "forget", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    keep = [line for line in dry.stdout.splitlines() if line.startswith("KEEP")]
    remove = [line for line in dry.stdout.splitlines() if line.startswith("REMOVE")]
    assert len(keep) == 2 and len(remove) == 2
    assert all("last snapshot" in line for line in keep)
    assert _snapshot_ids(run_cli, *plan) == ids  # nothing changed

    # the options override the plan: keep the last predeploy too
    dry = run_cli(*plan, "forget", "--keep-last", "2", "--keep-reason", "predeploy=1",
                  "--dry-run", "--json")  # fmt: skip
    decisions = json.loads(dry.stdout)["decisions"]
    assert sum(1 for d in decisions if d["keep"]) == 3
    assert any("predeploy" in " ".join(d["reasons"]) for d in decisions)

    # one destination only: the snapshots exist nowhere else, so --force is needed
    refused = run_cli(*plan, "forget")
    assert refused.returncode == 1
    assert "exist in no other repository" in refused.stderr
    assert _snapshot_ids(run_cli, *plan) == ids

    done = run_cli(*plan, "forget", "--force", "--prune")
    assert done.returncode == 0, done.stderr
    assert _snapshot_ids(run_cli, *plan) == ids[2:]
    assert run_cli(*plan, "check", "--read-data").returncode == 0


def test_named_forget_without_a_plan_works_as_restic(tmp_path: Path, run_cli: RunCli) -> None:
    repo = str(tmp_path / "repo")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("a")
    assert run_cli("-r", repo, "init").returncode == 0
    assert run_cli("-r", repo, "backup", str(source)).returncode == 0
    assert run_cli("-r", repo, "backup", str(source)).returncode == 0
    first = _snapshot_ids(run_cli, "-r", repo)[0]
    result = run_cli("-r", repo, "forget", first[:8])
    assert result.returncode == 0, result.stderr
    assert first not in _snapshot_ids(run_cli, "-r", repo)
    bad = run_cli("-r", repo, "forget", "--keep-reason", "predeploy")
    assert bad.returncode == 1 and "expected REASON=N" in bad.stderr
