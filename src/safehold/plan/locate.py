"""Finding the plan file (explicit path > `SAFEHOLD_PLAN` > `./safehold.toml`) and the
environment beside it, without loading it: no pydantic here, so a command that only needs to
know whether (and where) a plan is stays light. Loading and validating: `plan/loader.py`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from safehold.plan.envfile import read_env_file
from safehold.plan.errors import PlanError

PLAN_FILENAME = "safehold.toml"
PLAN_ENV = "SAFEHOLD_PLAN"
DOTENV_FILENAME = ".env"


def plan_label(path: Path, cwd: Path) -> str:
    """How a file is named in messages: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(absolute_path(cwd, Path("."))))
    except ValueError:
        return str(path)


def absolute_path(cwd: Path, path: Path) -> Path:
    return Path(os.path.normpath(path if path.is_absolute() else Path(cwd).absolute() / path))


def find_plan(path: Path | None = None, *, cwd: Path, environ: Mapping[str, str]) -> Path:
    """The plan file to use: `path`, else `SAFEHOLD_PLAN`, else `cwd/safehold.toml`.
    A folder stands for the `safehold.toml` inside it."""
    if path is not None:
        candidate, origin = Path(path), "the plan path given"
    elif environ.get(PLAN_ENV):
        candidate, origin = Path(environ[PLAN_ENV]), f"{PLAN_ENV}"
    else:
        candidate, origin = Path(PLAN_FILENAME), ""
    candidate = absolute_path(cwd, candidate)
    if candidate.is_dir():
        candidate = candidate / PLAN_FILENAME
    if candidate.is_file():
        return candidate
    where = f" (from {origin})" if origin else ""
    raise PlanError(
        f"{plan_label(candidate, cwd)}: no plan file here{where}",
        hint=(
            f"create {PLAN_FILENAME} in the app's folder, or set {PLAN_ENV} to its path"
            if not origin
            else f"check {origin}: it must name a {PLAN_FILENAME} file or its folder"
        ),
        file=candidate,
    )


def plan_environment(base_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of every command run with the plan in `base_dir`, typed in a shell or
    started by a schedule: the `.env` beside the plan under `environ` (the process's own
    variables win, as in `${VAR}` interpolation). Unreadable lines are skipped here; loading
    the plan reports them."""
    return {**read_env_file(base_dir / DOTENV_FILENAME, strict=False), **environ}
