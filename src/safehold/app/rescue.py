"""`safehold rescue --as-of TIME`: undo a delete (or overwrite) attack on a versioned S3 bucket.

Someone with a key that may delete (and no Object Lock to stop them) deleted the objects of a
repository, or overwrote some. Versioning kept every old version: a delete only put a delete
marker on top, an overwrite a new version. Rescue lists every version and delete marker under
the repository's prefix and, for every object, makes the newest version as of TIME current
again, so that the repository reads as it was at TIME:

* deleted after TIME (only delete markers above that version): the markers are removed, by
  their version ids, which brings the version back unchanged (same version id, same bytes);
* overwritten after TIME: that version is copied over the object (CopyObject from its version
  id), so it is current again; the attacker's version stays below it, noncurrent;
* written after TIME, or deleted at TIME but present now: hidden behind a new delete marker,
  as at TIME (nothing is deleted for good: a later rescue can bring it back).

Nothing is destroyed: no version is ever deleted, only delete markers. Then the repository is
opened with its password and checked with `--read-data`, and the result is reported. Refused,
with the reason, on a location that is not S3, on a bucket without versioning (the deleted
objects are gone: restore from another destination instead), for a TIME in the future, and
for a TIME before the repository existed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from safehold.app.opener import (
    RepositoryRequest,
    destination_backend,
    repository_location,
)
from safehold.backends import Backend, open_backend
from safehold.backends.s3 import S3Backend
from safehold.backends.s3versions import (
    ObjectVersion,
    bucket_versioning,
    hide,
    list_versions,
    remove_version,
    restore_version,
)
from safehold.errors import SafeholdError, UsageError
from safehold.plan.locate import plan_environment
from safehold.plan.models import Plan
from safehold.repo.check import Checker, CheckReport
from safehold.repo.lock import STALE_AFTER_S
from safehold.repo.progress import ProgressCallback
from safehold.repo.repository import Repository

StepKind = Literal["unhide", "put-back", "hide"]
WORKERS = 8


class RescueRefusedError(UsageError):
    """Rescue cannot work here (not S3, no versioning, a TIME that makes no sense)."""


@dataclass(frozen=True)
class RescueStep:
    """What rescue does to one object. `version_id` is the version made current (unhide,
    put-back); `markers` the delete markers removed (unhide); `version_time` when the version
    made current was written (None for hide)."""

    name: str
    kind: StepKind
    version_id: str = ""
    markers: tuple[str, ...] = ()
    version_time: datetime | None = None

    def describe(self) -> str:
        if self.kind == "unhide":
            count = len(self.markers)
            return (
                f"undelete {self.name} (remove {count} delete marker{'s' if count > 1 else ''}; "
                f"version of {_when(self.version_time)})"
            )
        if self.kind == "put-back":
            return f"put back {self.name} (the version of {_when(self.version_time)})"
        return f"hide {self.name} (did not exist at that time; a delete marker keeps it)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.kind,
            "version_id": self.version_id,
            "delete_markers_removed": list(self.markers),
            "version_time": self.version_time.isoformat() if self.version_time else None,
        }


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "?"


@dataclass
class RescuePlan:
    location: str
    as_of: datetime
    objects: int  # distinct object names below the prefix, in any version
    versions: int  # versions and delete markers seen
    steps: list[RescueStep]
    unchanged: int  # objects already as they were at TIME
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "as_of": self.as_of.isoformat(),
            "objects": self.objects,
            "versions": self.versions,
            "unchanged": self.unchanged,
            "steps": [step.as_dict() for step in self.steps],
            "warnings": self.warnings,
        }


@dataclass
class RescueResult:
    plan: RescuePlan
    done: int = 0
    failed: list[str] = field(default_factory=list)  # "name: why"
    check: CheckReport | None = None
    check_error: str = ""  # why the repository could not be opened or checked
    check_hint: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and self.check is not None and self.check.ok


# ----- what to do ---------------------------------------------------------------------------


def _order(version: ObjectVersion) -> tuple[datetime, bool, bool]:
    # newest first; at equal times the current one is the newer
    return (version.modified, version.latest, version.delete_marker)


def _same_content(one: ObjectVersion, other: ObjectVersion) -> bool:
    return bool(one.etag) and one.etag == other.etag and one.size == other.size


def step_for(versions: list[ObjectVersion], as_of: datetime) -> RescueStep | None:
    """What makes one object (all its versions and delete markers) as it was at `as_of`:
    None when it already is."""
    ordered = sorted(versions, key=_order, reverse=True)
    current = next((v for v in ordered if v.latest), ordered[0])
    index = next((i for i, v in enumerate(ordered) if v.modified <= as_of), None)
    if index is None or ordered[index].delete_marker:
        # it did not exist at as_of (or was deleted then): it must not exist now
        return None if current.delete_marker else RescueStep(ordered[0].name, "hide")
    target = ordered[index]
    if not current.delete_marker and (
        current.version_id == target.version_id or _same_content(current, target)
    ):
        return None  # as it was (also when an earlier rescue put the old bytes back)
    newer = ordered[:index]
    if all(v.delete_marker for v in newer):
        markers = tuple(v.version_id for v in newer)
        return RescueStep(target.name, "unhide", target.version_id, markers, target.modified)
    return RescueStep(target.name, "put-back", target.version_id, (), target.modified)


def plan_steps(
    versions: Iterable[ObjectVersion], as_of: datetime
) -> tuple[list[RescueStep], int, int, int]:
    """(steps, objects, versions, unchanged) for every object in `versions`."""
    by_name: dict[str, list[ObjectVersion]] = {}
    count = 0
    for version in versions:
        by_name.setdefault(version.name, []).append(version)
        count += 1
    steps = []
    for name in sorted(by_name):
        step = step_for(by_name[name], as_of)
        if step is not None:
            steps.append(step)
    return steps, len(by_name), count, len(by_name) - len(steps)


# ----- where ----------------------------------------------------------------------------------


def rescue_backend(backend: Backend) -> S3Backend:
    """The backend, if rescue can work on it (an S3 location); else refused with the reason."""
    if not isinstance(backend, S3Backend):
        raise RescueRefusedError(
            f"rescue works on a versioned S3 bucket; {backend.location} is not one",
            hint="restore what was lost from another destination (`safehold copy` puts a "
            "repository back in step from a good copy)",
        )
    return backend


def locate(
    plan: Plan | None,
    destination_name: str | None,
    request: RepositoryRequest,
    environ: Mapping[str, str] = os.environ,
) -> S3Backend:
    """The bucket to rescue: -r (the request's location) or a plan destination (default: the
    first), with the destination's own login. The repository is not opened: its config and
    keys may be among what was deleted."""
    typed = bool(request.location or environ.get(request.role.location_variable))
    if typed or plan is None:
        if destination_name is not None:
            raise UsageError(
                "give either -r/--repo or --dest, not both"
                if typed
                else "--dest names a plan destination, and there is no plan",
                hint="pass --plan FILE, or -r LOCATION without --dest",
            )
        return rescue_backend(open_backend(repository_location(request, environ)))
    destination = plan.destination(destination_name)
    backend = destination_backend(destination, plan_environment(plan.base_dir, environ))
    return rescue_backend(backend)


# ----- doing it -------------------------------------------------------------------------------


def plan_rescue(backend: S3Backend, as_of: datetime, now: datetime | None = None) -> RescuePlan:
    """Read every version below the prefix and say what would make it as it was at `as_of`."""
    now = now or datetime.now(UTC)
    if as_of > now:
        raise RescueRefusedError(
            f"--as-of {_when(as_of)} is in the future",
            hint="give a time before the objects were deleted, like -2h",
        )
    state = bucket_versioning(backend)
    if state is None:
        raise RescueRefusedError(
            f"bucket {backend.bucket} has no versioning: what was deleted or overwritten there "
            "is gone, and rescue has nothing to bring back",
            hint="restore from another destination (`safehold copy --from-repo GOOD`), and "
            "turn on versioning (or Object Lock) on this bucket for next time",
        )
    warnings = []
    if state != "Enabled":
        warnings.append(
            f"versioning of bucket {backend.bucket} is {state.lower()}: what was deleted or "
            "overwritten since then has no older version to come back from"
        )
    versions = list(list_versions(backend))
    if not any(v.modified <= as_of for v in versions):
        raise RescueRefusedError(
            f"{backend.location} held nothing at {_when(as_of)}",
            hint="give a later time: one after the repository was created and before the "
            "objects were deleted",
        )
    steps, objects, seen, unchanged = plan_steps(versions, as_of)
    fresh = [
        v.name for v in versions
        if v.name.startswith("locks/") and v.latest and not v.delete_marker
        and (now - v.modified).total_seconds() < STALE_AFTER_S
    ]  # fmt: skip
    if fresh:
        warnings.append(
            f"{len(fresh)} lock(s) younger than {STALE_AFTER_S / 60:.0f} minutes ({fresh[0]}): "
            "if a backup or prune is running on this repository, stop it, then rescue again"
        )
    if not any(v.name == "config" and v.modified <= as_of for v in versions):
        warnings.append(f"there was no repository config at {_when(as_of)}")
    return RescuePlan(backend.location, as_of, objects, seen, steps, unchanged, warnings)


def _apply(backend: S3Backend, step: RescueStep) -> None:
    if step.kind == "unhide":
        for marker in step.markers:
            remove_version(backend, step.name, marker)
    elif step.kind == "put-back":
        restore_version(backend, step.name, step.version_id)
    else:
        hide(backend, step.name)


def execute_rescue(
    backend: S3Backend,
    plan: RescuePlan,
    open_repository: Callable[[], Repository],
    progress: ProgressCallback | None = None,
) -> RescueResult:
    """Carry out every step (a failed one is reported, the others still run), then open the
    repository and check it with --read-data (a repository that does not open, or a wrong
    password, is reported in `check_error`: the steps are done either way)."""
    result = RescueResult(plan)

    def run(step: RescueStep) -> str | None:
        try:
            _apply(backend, step)
        except SafeholdError as err:
            return f"{step.name}: {err.message}"
        return None

    with ThreadPoolExecutor(WORKERS) as pool:
        for outcome in pool.map(run, plan.steps):
            if outcome is None:
                result.done += 1
            else:
                result.failed.append(outcome)
    try:
        repo = open_repository()
        with repo.locked(exclusive=False):
            result.check = Checker(repo, progress).run(read_data=True)
    except SafeholdError as err:  # the objects are back either way: say so, then why
        result.check_error, result.check_hint = err.message, err.hint or ""
    return result
