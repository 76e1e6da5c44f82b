"""safehold: backups for small apps, in restic's repository format, proven by restore drills.

The public Python API is what `__all__` lists (docs/api.md): load a plan, open a repository,
back up, list snapshots, plan and execute a restore, drill, observe health. The names load on
first use, so `import safehold` stays cheap for the CLI and for scripts that use one call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from safehold.errors import SafeholdError
from safehold.version import __version__

if TYPE_CHECKING:
    from safehold.api import (
        DrillRecord,
        Observation,
        Plan,
        PlanBackupResult,
        Repository,
        RestorePlan,
        RestoreReport,
        Snapshot,
        backup,
        drill,
        execute_restore,
        load_plan,
        observe,
        open_repository,
        plan_restore,
        snapshots,
    )


__all__ = [
    "DrillRecord",
    "Observation",
    "Plan",
    "PlanBackupResult",
    "Repository",
    "RestorePlan",
    "RestoreReport",
    "SafeholdError",
    "Snapshot",
    "__version__",
    "backup",
    "drill",
    "execute_restore",
    "load_plan",
    "observe",
    "open_repository",
    "plan_restore",
    "snapshots",
]
_API = frozenset(__all__) - {"SafeholdError", "__version__"}


def __getattr__(name: str) -> Any:
    """PEP 562: the API names come from safehold.api the first time one is used."""
    if name in _API:
        value = getattr(importlib.import_module("safehold.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'safehold' has no attribute {name!r}")
