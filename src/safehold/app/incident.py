"""Incident mode: `safehold incident start`, `status`, `end`.

`start` runs the plan's `[incident] freeze` command (maintenance mode on), takes a held
evidence snapshot of every source (reason `evidence`, so it never becomes `latest` nor the
baseline of a drill), and measures the scope: each source's live data against its last good
backup (app/scope.py). While the incident is open, scheduled prune is paused (ops/jobs.py
reads `open_incident`); backups keep running. Every safehold command run meanwhile is
appended to the incident's timeline (`note_event` in app/incident_log.py; the CLI calls it
after each command).
`end` runs `unfreeze`, and the incident is over.

Two places keep it:
- the state folder's `incident` document (app/../ops/state.py's folder): the open incident of
  this plan on this machine, with its timeline so far;
- the repository, as write-once records `safehold/incidents/<id>` (docs/format.md): a `start`
  record when it opens (why, who, when, freeze, evidence, baseline, scope), and an `end`
  record naming the start record with the whole timeline. The runbook lists the last ones.

Core logic: nothing here prints."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.alerts.store import Document, StateStore
from safehold.app.holds import hold_snapshot, release_holds
from safehold.app.incident_log import STATE, Clock, note_event, open_incident
from safehold.app.incident_log import now as _now
from safehold.app.plan_backup import run_plan_backup
from safehold.app.restore import find_plan_snapshot
from safehold.app.scope import SourceScope, source_scope
from safehold.errors import InterruptedError_, SafeholdError, UsageError
from safehold.plan.models import Plan
from safehold.redaction import redact
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import EVIDENCE, Snapshot
from safehold.sources.base import Source
from safehold.sources.from_plan import build_sources

KIND = "incidents"
_OUTPUT_TAIL = 300


@dataclass(frozen=True)
class CommandRun:
    """A freeze or unfreeze command, run."""

    command: str
    exit_code: int | None  # None: timed out
    output: str  # the last lines, redacted
    at: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "ok": self.ok,
            "output": self.output,
            "at": self.at,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class IncidentStart:
    document: Document  # the state document (also what the start record holds)
    freeze: CommandRun | None
    evidence: Snapshot | None
    evidence_failed: list[str] = field(default_factory=list)  # "source: error"
    scopes: list[SourceScope] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.freeze is None or self.freeze.ok) and not self.evidence_failed


@dataclass
class IncidentRecord:
    """One incident as the repository holds it: its start record and, once over, its end."""

    id: str  # the start record's id
    start: Document
    end: Document | None = None

    @property
    def open(self) -> bool:
        return self.end is None

    @property
    def opened(self) -> str:
        return str(self.start.get("opened", ""))

    @property
    def why(self) -> str:
        return str(self.start.get("why", ""))

    @property
    def timeline(self) -> list[Document]:
        source = self.end if self.end is not None else self.start
        return list(source.get("timeline") or [])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "open": self.open,
            **self.start,
            "ended": self.end.get("ended") if self.end else None,
            "unfreeze": self.end.get("unfreeze") if self.end else None,
            "timeline": self.timeline,
        }


def run_shell(
    command: str, *, cwd: str, environ: Mapping[str, str], timeout: float, clock: Clock = _now
) -> CommandRun:
    """Run a plan command with /bin/sh in its own process group; a timeout kills the group."""
    at = clock()
    started = datetime.now().timestamp()
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=dict(environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    code: int | None
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    text = redact(output.decode("utf-8", "replace").strip())
    tail = "\n".join(text.splitlines()[-5:])[-_OUTPUT_TAIL:]
    return CommandRun(command, code, tail, at.isoformat(), datetime.now().timestamp() - started)


def _who(repo: Repository) -> str:
    return f"{repo.host.username}@{repo.host.hostname}"


def _baseline(repo: Repository, plan: Plan, source: str) -> Snapshot | None:
    try:
        return find_plan_snapshot(repo, "latest", app=plan.app, env=plan.env, source=source)
    except UsageError:
        return None


def measure_scope(
    repo: Repository,
    plan: Plan,
    sources: list[Source],
    baselines: dict[str, Snapshot] | None = None,
    progress: ProgressCallback | None = None,
) -> list[SourceScope]:
    """Each source's live data against its last good backup (added to `baselines`, by id);
    `progress` hears phase "scope", one item per source."""
    scopes: list[SourceScope] = []
    for number, source in enumerate(sources):
        if progress is not None:
            progress(Progress("scope", number, len(sources), current=source.name))
        baseline = _baseline(repo, plan, source.name)
        if baseline is None:
            scopes.append(SourceScope(source.name, source.kind, error="no good backup of it yet"))
            continue
        if baselines is not None:
            baselines[baseline.id] = baseline
        scopes.append(source_scope(repo, baseline, source))
    if progress is not None:
        progress(Progress("scope", len(sources), len(sources)))
    return scopes


def start_incident(
    open_repo: Callable[[], Repository],
    plan: Plan,
    store: StateStore,
    *,
    why: str = "",
    environ: Mapping[str, str] = os.environ,
    clock: Clock = _now,
    on_step: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
) -> IncidentStart:
    """Open an incident: freeze, evidence snapshot (held), scope, records. UsageError when
    one is open already. A failed freeze or evidence source is reported, not raised: the
    rest still runs (evidence matters most when things go wrong). The freeze runs before the
    repository is opened (`open_repo`): writes stop even when the repository cannot be
    reached; then the incident is open on this machine only, and `repository_error` says why.

    `progress` hears the evidence backup (phase "backup", per source) and the scope. An
    interrupted evidence backup (Ctrl-C, SIGTERM) is raised after the timeline says so: the
    incident stays open on this machine, the data already stored is kept for the next backup."""
    current = open_incident(store)
    if current is not None:
        raise UsageError(
            f"an incident is already open since {current['opened']}: {current.get('why') or '-'}",
            hint="`safehold incident status` shows it; `safehold incident end` closes it",
        )
    why = " ".join(why.split()) or "incident"
    step = on_step or (lambda _text: None)
    opened = clock()
    document: Document = {
        "opened": opened.isoformat(),
        "why": why,
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "plan": f"{plan.app}-{plan.env}",
        "timeline": [],
    }
    timeline: list[Document] = document["timeline"]
    # Written first: a second start (or a prune job) sees it even if a step below fails.
    store.write(STATE, document)
    freeze = None
    if plan.incident.freeze:
        step(f"freeze: {plan.incident.freeze}")
        freeze = run_shell(
            plan.incident.freeze,
            cwd=str(plan.base_dir),
            environ=environ,
            timeout=plan.incident.timeout.total_seconds(),
            clock=clock,
        )
        document["freeze"] = freeze.to_json()
        result = "ok" if freeze.ok else f"FAILED (exit code {freeze.exit_code})"
        timeline.append({"at": freeze.at, "what": f"freeze: {freeze.command}: {result}"})
    else:
        timeline.append({"at": clock().isoformat(), "what": "no freeze command in the plan"})
    try:
        repo = open_repo()
    except SafeholdError as err:
        document["repository_error"] = err.message
        document["evidence"] = {"snapshot": None, "failed": [f"repository: {err.message}"]}
        timeline.append({"at": clock().isoformat(), "what": f"repository FAILED: {err.message}"})
        store.write(STATE, document)
        return IncidentStart(document, freeze, None, [f"repository: {err.message}"])
    sources = build_sources(plan, environ=environ)
    step("evidence snapshot of every source")
    evidence = None
    failed: list[str] = []
    try:
        backup = run_plan_backup(
            repo,
            sources,
            app=plan.app,
            env=plan.env,
            reason=EVIDENCE,
            note=f"incident {why}"[:60],
            redact=plan.redactor(),
            progress=progress,
        )
        evidence = backup.snapshot
        failed = [f"{o.name}: {o.error}" for o in backup.failed]
    except (InterruptedError_, KeyboardInterrupt) as err:
        stopped = err.message if isinstance(err, InterruptedError_) else "interrupted"
        document["evidence"] = {"snapshot": None, "failed": [f"INTERRUPTED: {stopped}"]}
        timeline.append({"at": clock().isoformat(), "what": f"evidence INTERRUPTED: {stopped}"})
        store.write(STATE, document)
        raise
    except SafeholdError as err:
        failed = [f"all sources: {err.message}"]
    if evidence is not None:
        document["evidence"] = {
            "snapshot": evidence.id,
            "name": evidence.name,
            "complete": not failed,
            "failed": failed,
        }
        timeline.append(
            {
                "at": clock().isoformat(),
                "what": f"evidence snapshot {evidence.name} (held)"
                + (f"; FAILED: {'; '.join(failed)}" if failed else ""),
            }
        )
    else:
        document["evidence"] = {"snapshot": None, "failed": failed}
        timeline.append({"at": clock().isoformat(), "what": f"evidence FAILED: {failed[0]}"})
    step("scope: live data against the last good backup")
    baselines: dict[str, Snapshot] = {}
    scopes = measure_scope(repo, plan, sources, baselines, progress)
    document["scope"] = [scope.to_json() for scope in scopes]
    # The backups to recover from are held too: backups go on during the incident (and hold
    # the damage), so retention would otherwise soon forget the last good one.
    held = []
    for baseline in baselines.values():
        hold = hold_snapshot(repo, baseline, f"incident baseline: {why}")
        held.append({"snapshot": baseline.id, "name": baseline.name, "hold": hold.id})
        timeline.append(
            {
                "at": clock().isoformat(),
                "what": f"last good backup {baseline.name or baseline.short_id} held",
            }
        )
    document["baselines"] = held
    document["scope_lines"] = [line for scope in scopes for line in scope.lines()]
    timeline.append({"at": clock().isoformat(), "what": "scope measured"})
    with repo.locked(exclusive=False):
        document["id"] = repo.save_record(KIND, {"type": "start", **document})
    store.write(STATE, document)
    return IncidentStart(document, freeze, evidence, failed, scopes)


@dataclass
class IncidentEnd:
    record: IncidentRecord
    unfreeze: CommandRun | None


def end_incident(
    repo: Repository,
    plan: Plan,
    store: StateStore,
    *,
    skip_unfreeze: bool = False,
    environ: Mapping[str, str] = os.environ,
    clock: Clock = _now,
) -> IncidentEnd:
    """Run `unfreeze` and close the open incident: the end record (the whole timeline) is
    written into the repository and scheduled prune resumes. A failed unfreeze keeps the
    incident open (UsageError) unless `skip_unfreeze`."""
    document = open_incident(store)
    if document is None:
        raise UsageError("no incident is open", hint="`safehold incident start` opens one")
    timeline: list[Document] = list(document.get("timeline") or [])
    unfreeze = None
    if plan.incident.unfreeze and not skip_unfreeze:
        unfreeze = run_shell(
            plan.incident.unfreeze,
            cwd=str(plan.base_dir),
            environ=environ,
            timeout=plan.incident.timeout.total_seconds(),
            clock=clock,
        )
        if not unfreeze.ok:
            note_event(
                store,
                f"unfreeze: {unfreeze.command}: FAILED (exit code {unfreeze.exit_code})",
                clock=clock,
            )
            code = "timed out" if unfreeze.exit_code is None else f"exit code {unfreeze.exit_code}"
            raise UsageError(
                f"unfreeze `{unfreeze.command}` failed ({code})"
                + (f": {unfreeze.output.splitlines()[-1]}" if unfreeze.output else ""),
                hint="the incident stays open: fix it and run `safehold incident end` again, "
                "or unfreeze by hand and run `safehold incident end --skip-unfreeze`",
            )
        timeline.append({"at": unfreeze.at, "what": f"unfreeze: {unfreeze.command}: ok"})
    elif skip_unfreeze and plan.incident.unfreeze:
        timeline.append({"at": clock().isoformat(), "what": "unfreeze skipped (--skip-unfreeze)"})
    for baseline in document.get("baselines") or []:
        release_holds(repo, str(baseline["snapshot"]), [str(baseline["hold"])])
        timeline.append(
            {
                "at": clock().isoformat(),
                "what": f"hold on last good backup {baseline.get('name')} released",
            }
        )
    ended = clock().isoformat()
    timeline.append({"at": ended, "what": "incident ended; scheduled prune resumed"})
    end = {
        "type": "end",
        "incident": document.get("id"),
        "ended": ended,
        "who": _who(repo),
        "unfreeze": unfreeze.to_json() if unfreeze else None,
        "timeline": timeline,
        "why": document.get("why"),
        "opened": document.get("opened"),
        "evidence": document.get("evidence"),
    }
    with repo.locked(exclusive=False):
        if not document.get("id"):  # opened while the repository could not be reached
            start_record = {k: v for k, v in document.items() if k != "timeline"}
            document["id"] = repo.save_record(KIND, {"type": "start", **start_record})
            end["incident"] = document["id"]
        repo.save_record(KIND, end)
    store.delete(STATE)
    start = {k: v for k, v in document.items() if k != "id"}
    return IncidentEnd(IncidentRecord(str(document.get("id") or ""), start, end), unfreeze)


def list_incidents(repo: Repository, plan: Plan | None = None) -> list[IncidentRecord]:
    """The incidents recorded in the repository (of `plan` when given), newest first."""
    starts: dict[str, IncidentRecord] = {}
    ends: dict[str, Document] = {}
    for record_id, document in repo.load_records(KIND):
        if document.get("type") == "start":
            body = {k: v for k, v in document.items() if k != "type"}
            starts[record_id] = IncidentRecord(record_id, body)
        elif document.get("type") == "end" and document.get("incident"):
            ends[str(document["incident"])] = document
    records = []
    for record_id, record in starts.items():
        if plan is not None and record.start.get("plan") != f"{plan.app}-{plan.env}":
            continue
        record.end = ends.get(record_id)
        records.append(record)
    return sorted(records, key=lambda r: r.opened, reverse=True)
