"""The drill record: what one drill did, measured and concluded. Stored in the repository as a
`drills` record through `Repository.save_record` (repo/records.py), so it travels with the
backups and any machine that can open the repository sees when restores were last proven."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from safehold.errors import IntegrityError
from safehold.repo.repository import Repository

KIND = "drills"
RECORD_VERSION = 1


@dataclass
class Phase:
    """A timed step: `scratch` (start scratch servers), `fetch` (open the repository, find the
    snapshot), `restore:<source>`, `checks`, `teardown`."""

    name: str
    seconds: float
    ok: bool = True
    detail: str = ""


@dataclass
class CheckResult:
    name: str  # a label, like "row counts of db" or "sql on db: SELECT count(*) FROM users"
    # sources | rows | roles | files | freshness | sql | uploads | command | http | rto | rpo
    kind: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0
    warning: bool = False  # ok, but worth a look (shown as WARN)


@dataclass
class SourceResult:
    name: str
    kind: str
    target: str  # the scratch target, redacted (never a production location)
    ok: bool
    seconds: float = 0.0
    summary: list[str] = field(default_factory=list)
    command: str = ""  # the CLI command that does the same restore (the runbook prints it)
    error: str = ""


@dataclass
class DrillRecord:
    started: datetime
    finished: datetime
    passed: bool
    snapshot_id: str
    snapshot_name: str
    snapshot_time: datetime
    app: str
    env: str
    destination: str  # the plan destination drilled from (or the repository location)
    host: str
    reasons: list[str] = field(default_factory=list)  # why it failed, one line each
    phases: list[Phase] = field(default_factory=list)
    sources: list[SourceResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    rto_target_s: float | None = None
    rto_measured_s: float = 0.0  # time to restore: fetch + restores + checks
    rpo_target_s: float | None = None
    data_age_s: float = 0.0  # drill start - snapshot time: what a restore now would lose
    newest_record_age_s: float | None = None  # snapshot time - newest dated row
    interrupted: bool = False
    pitr: list[dict[str, Any]] = field(default_factory=list)  # point-in-time recoveries
    record_id: str = ""  # set once stored

    @property
    def rto_ok(self) -> bool | None:
        if self.rto_target_s is None:
            return None
        return self.rto_measured_s <= self.rto_target_s

    @property
    def rpo_ok(self) -> bool | None:
        if self.rpo_target_s is None:
            return None
        return self.data_age_s <= self.rpo_target_s

    @property
    def duration_s(self) -> float:
        return (self.finished - self.started).total_seconds()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("record_id")
        data["version"] = RECORD_VERSION
        for key in ("started", "finished", "snapshot_time"):
            data[key] = getattr(self, key).isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], record_id: str = "") -> DrillRecord:
        try:
            return cls(
                started=datetime.fromisoformat(data["started"]),
                finished=datetime.fromisoformat(data["finished"]),
                passed=bool(data["passed"]),
                snapshot_id=data["snapshot_id"],
                snapshot_name=data.get("snapshot_name", ""),
                snapshot_time=datetime.fromisoformat(data["snapshot_time"]),
                app=data.get("app", ""),
                env=data.get("env", ""),
                destination=data.get("destination", ""),
                host=data.get("host", ""),
                reasons=list(data.get("reasons", [])),
                phases=[Phase(**p) for p in data.get("phases", [])],
                sources=[SourceResult(**s) for s in data.get("sources", [])],
                checks=[CheckResult(**c) for c in data.get("checks", [])],
                rto_target_s=data.get("rto_target_s"),
                rto_measured_s=float(data.get("rto_measured_s", 0.0)),
                rpo_target_s=data.get("rpo_target_s"),
                data_age_s=float(data.get("data_age_s", 0.0)),
                newest_record_age_s=data.get("newest_record_age_s"),
                interrupted=bool(data.get("interrupted", False)),
                pitr=[dict(entry) for entry in data.get("pitr", []) if isinstance(entry, dict)],
                record_id=record_id,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise IntegrityError(f"drill record {record_id[:8]} is not readable: {err}") from None


def save_drill(repo: Repository, record: DrillRecord) -> str:
    record.record_id = repo.save_record(KIND, record.to_json())
    return record.record_id


def load_drills(
    repo: Repository, app: str | None = None, env: str | None = None
) -> list[DrillRecord]:
    """Every drill record of the repository (of one app/env when given), oldest first."""
    records = [DrillRecord.from_json(doc, rid) for rid, doc in repo.load_records(KIND)]
    records = [
        r for r in records if (app is None or r.app == app) and (env is None or r.env == env)
    ]
    return sorted(records, key=lambda r: r.started)


def latest_drill(
    repo: Repository, app: str | None = None, env: str | None = None
) -> DrillRecord | None:
    records = load_drills(repo, app, env)
    return records[-1] if records else None
