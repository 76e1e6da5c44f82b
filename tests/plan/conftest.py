"""Fixtures for plan tests: write a plan (and a .env) into a temporary app folder, load it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from safehold.plan import Plan, PlanError, load_plan
from tests.plan.helpers import ErrorOf, LoadText


@pytest.fixture
def load_text(tmp_path: Path) -> LoadText:
    """Write `text` as tmp_path/safehold.toml (and `dotenv` as .env) and load it."""

    def load(
        text: str, environ: Mapping[str, str] | None = None, dotenv: str | None = None
    ) -> Plan:
        (tmp_path / "safehold.toml").write_text(text, encoding="utf-8")
        if dotenv is not None:
            (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
        return load_plan(cwd=tmp_path, environ=dict(environ or {}))

    return load


@pytest.fixture
def error_of(load_text: LoadText) -> ErrorOf:
    """The PlanError that loading `text` raises."""

    def error(
        text: str, environ: Mapping[str, str] | None = None, dotenv: str | None = None
    ) -> PlanError:
        with pytest.raises(PlanError) as caught:
            load_text(text, environ, dotenv)
        return caught.value

    return error
