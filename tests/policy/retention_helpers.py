"""Building snapshots for the retention tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from safehold.policy.retention import Decision
from safehold.repo.gotypes import parse_time
from safehold.repo.snapshot import Snapshot


def snap(
    when: str,
    *,
    sid: str | None = None,
    reason: str | None = None,
    app: str | None = None,
    env: str = "prod",
    complete: bool | None = None,
    sources: Mapping[str, Mapping[str, Any]] | None = None,
    tags: Iterable[str] = (),
    host: str = "host",
    paths: Iterable[str] = ("/data",),
) -> Snapshot:
    """A snapshot at `when` (RFC 3339). The id defaults to `when` itself, readable in asserts."""
    meta: dict[str, Any] = {}
    if reason is not None:
        meta["reason"] = reason
        meta["name"] = f"{app or 'x'}-{env}-{when[:10]}-{reason}"
    if app is not None:
        meta["app"] = app
        meta["env"] = env
    if sources is not None:
        meta["sources"] = {name: dict(manifest) for name, manifest in sources.items()}
    if complete is not None:
        meta["complete"] = complete
    return Snapshot(
        time=parse_time(when),
        tree=hashlib.sha256(when.encode()).hexdigest(),
        paths=list(paths),
        hostname=host,
        tags=list(tags),
        safehold=meta,
        id=sid if sid is not None else when,
    )


def kept_ids(decisions: Iterable[Decision]) -> list[str]:
    return [decision.snapshot.id for decision in decisions if decision.keep]


def by_id(decisions: Iterable[Decision]) -> dict[str, Decision]:
    return {decision.snapshot.id: decision for decision in decisions}


def days(start: str, count: int, at: str = "03:00:00Z") -> list[str]:
    """`count` timestamps one day apart from date `start` (YYYY-MM-DD), at time `at`."""
    from datetime import date, timedelta

    first = date.fromisoformat(start)
    return [f"{(first + timedelta(days=n)).isoformat()}T{at}" for n in range(count)]
