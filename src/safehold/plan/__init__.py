"""The plan file `safehold.toml`: what an app backs up, where to, and its recovery targets.

plan = load_plan(cwd=Path.cwd(), environ=os.environ)   # PlanError on any problem
plan.sources, plan.destinations, plan.targets.rpo       # validated, paths absolute
describe_plan(plan)                                     # lines without secrets
plan.redactor()(text)                                   # any text, secrets -> ***
"""

from safehold.plan.describe import describe_plan
from safehold.plan.errors import PlanError
from safehold.plan.interpolate import Substitution
from safehold.plan.loader import PLAN_ENV, PLAN_FILENAME, find_plan, load_plan, parse_plan
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
