"""The plan file `safehold.toml`: what an app backs up, where to, and its recovery targets.

plan = load_plan(cwd=Path.cwd(), environ=os.environ)   # PlanError on any problem
plan.sources, plan.destinations, plan.targets.rpo       # validated, paths absolute
describe_plan(plan)                                     # lines without secrets
plan.redactor()(text)                                   # any text, secrets -> ***

The names below load on first use (PEP 562, as `safehold/__init__.py` does), so importing
one light part of the package (`plan.errors`, `plan.locate`) does not build pydantic models:
a command that names `-r` and no plan never loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safehold.plan.describe import describe_plan
    from safehold.plan.errors import PlanError
    from safehold.plan.interpolate import Substitution
    from safehold.plan.loader import load_plan, parse_plan
    from safehold.plan.locate import PLAN_ENV, PLAN_FILENAME, find_plan
    from safehold.plan.models import (
        AnySource,
        BucketConfig,
        CommandConfig,
        FilesConfig,
        LocalDestination,
        MySQLConfig,
        Owners,
        Plan,
        PostgresConfig,
        SecretsConfig,
        SQLiteConfig,
        Targets,
    )
    from safehold.plan.redact import Redactor
    from safehold.plan.starter import Detected, DetectedDatabase, detect, render_starter_plan
    from safehold.policy.duration import DurationError, format_duration, parse_duration

# the module that defines each name
_MODULES = {
    "safehold.plan.describe": ("describe_plan",),
    "safehold.plan.errors": ("PlanError",),
    "safehold.plan.interpolate": ("Substitution",),
    "safehold.plan.loader": ("load_plan", "parse_plan"),
    "safehold.plan.locate": ("PLAN_ENV", "PLAN_FILENAME", "find_plan"),
    "safehold.plan.models": (
        "AnySource",
        "BucketConfig",
        "CommandConfig",
        "FilesConfig",
        "LocalDestination",
        "MySQLConfig",
        "Owners",
        "Plan",
        "PostgresConfig",
        "SecretsConfig",
        "SQLiteConfig",
        "Targets",
    ),
    "safehold.plan.redact": ("Redactor",),
    "safehold.plan.starter": ("Detected", "DetectedDatabase", "detect", "render_starter_plan"),
    "safehold.policy.duration": ("DurationError", "format_duration", "parse_duration"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "PLAN_ENV",
    "PLAN_FILENAME",
    "AnySource",
    "BucketConfig",
    "CommandConfig",
    "Detected",
    "DetectedDatabase",
    "DurationError",
    "FilesConfig",
    "LocalDestination",
    "MySQLConfig",
    "Owners",
    "Plan",
    "PlanError",
    "PostgresConfig",
    "Redactor",
    "SQLiteConfig",
    "SecretsConfig",
    "Substitution",
    "Targets",
    "describe_plan",
    "detect",
    "find_plan",
    "format_duration",
    "load_plan",
    "parse_duration",
    "parse_plan",
    "render_starter_plan",
]


def __getattr__(name: str) -> Any:
    """PEP 562: each name comes from its module the first time it is used."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'safehold.plan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
