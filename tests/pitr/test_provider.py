"""A managed database (RDS, Neon, Supabase...) whose point-in-time recovery is the provider's:
the plan records the window (`pitr = "provider:7d"`), status says honestly that safehold does
not verify it, the runbook gives the provider's console steps, and safehold's own PITR
commands refuse that source with the reason instead of failing on a server they cannot
reach."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.drills.runbook import build_runbook, to_markdown
from safehold.errors import UsageError
from safehold.health.observe import Observation
from safehold.health.scorecard import Level
from safehold.health.status import pitr_items
from safehold.pitr.restore import pitr_source
from safehold.plan.errors import PlanError
from safehold.plan.loader import parse_plan
from safehold.plan.models import Plan
from tests.conftest import RunCli

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
URL = "postgresql://shop@shop.abc123.eu-west-1.rds.amazonaws.com/shop"


def _plan_text(pitr: str) -> str:
    return f"""
app = "shop"
env = "prod"
[targets]
rpo = "1h"
rto = "1h"
[[sources]]
name = "db"
type = "postgres"
url = "{URL}"
pitr = "{pitr}"
[[destinations]]
name = "local"
repository = "backups"
"""


def _plan(tmp_path: Path, pitr: str = "provider:7d") -> Plan:
    text = _plan_text(pitr)
    (tmp_path / "safehold.toml").write_text(text)
    return parse_plan(text, file=tmp_path / "safehold.toml", environ={})


def test_status_says_the_window_is_the_providers_and_not_verified(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    [item] = pitr_items(plan, Observation(plan, NOW, []))
    assert item.level is Level.WARN
    assert item.title == "point-in-time recovery of db is the provider's"
    assert "(1w)" in item.detail and "not verified by safehold" in item.detail
    assert "console" in item.fix


def test_the_runbook_names_the_providers_console_steps(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    text = to_markdown(build_runbook(plan, None, NOW), plan, None)
    assert "point-in-time recovery is the provider's (window 1w)" in text
    assert "Restore to point in time" in text
    assert "safehold restore latest --source db --at" not in text  # not safehold's path


def test_safeholds_own_pitr_commands_refuse_the_source_with_the_reason(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    with pytest.raises(UsageError, match="is the provider's") as caught:
        pitr_source(plan, "db")
    assert "console" in (caught.value.hint or "")
    with pytest.raises(UsageError, match="is the provider's"):
        pitr_source(plan, None)
    assert pitr_source(_plan(tmp_path, "wal"), None).name == "db"


def test_a_malformed_provider_window_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="pitr"):
        _plan(tmp_path, "provider:soon")


def test_pitr_setup_and_restore_at_on_a_provider_source_through_the_cli(
    tmp_path: Path, run_cli: RunCli
) -> None:
    _plan(tmp_path)
    plan = ["--plan", str(tmp_path / "safehold.toml")]
    assert run_cli(*plan, "init").returncode == 0
    for args in (
        ["pitr", "setup", "--source", "db"],
        ["restore", "latest", "--source", "db", "--at", "-10m", "--into", URL + "_restored"],
    ):
        result = run_cli(*plan, *args)
        assert result.returncode != 0, result.stdout
        assert "is the provider's" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
