"""Restore to a point in time, as a plan and then its execution (like app/restore.py).

`plan_pitr_restore` reads the repository and decides: the base backup (the newest one that
finished before the target and whose WAL reaches it), the WAL files to fetch, the databases
to copy, an estimate of the time; it changes nothing, so `restore --at … --dry-run` prints it.
`execute_pitr_restore` carries it out:

* `--into postgresql://…/newdb`: the base backup and WAL go into a throwaway server (a
  private folder, unix socket only), which recovers to the target and promotes; then each
  wanted database is copied (pg_dump | pg_restore) into the new database, and row counts
  are compared. The source's live databases are refused as targets.
* `--into /path/to/datadir`: a whole cluster that recovers to the target when started.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from safehold.errors import UsageError
from safehold.pitr.chain import BaseBackup, ChainReport, Window, base_backups, build_chain
from safehold.pitr.errors import OutsideWindowError, PitrError
from safehold.pitr.recover import RecoveryTarget, build_datadir, check_empty_datadir, give_to
from safehold.pitr.store import StoredWal, WalArchive
from safehold.pitr.walnames import parse_wal_name
from safehold.plan.models import Plan, PostgresConfig
from safehold.policy.duration import DurationError, parse_duration
from safehold.repo.repository import Repository
from safehold.sources.dbtools import RestoreError, run_tool, tool_failure
from safehold.sources.postgres import PgLocation, PostgresSource
from safehold.sources.scratch import ScratchRoot, ThrowawayPostgres

RESTORE_MB_PER_S = 60.0  # for the estimate: base backup and WAL read, unpacked and replayed
_SAFETY_SEGMENTS = 2  # WAL files fetched past the first one handed over after the target


def parse_at(text: str, now: datetime | None = None) -> datetime:
    """`--at`: a timestamp (`2026-01-14 16:02:00+00`; without a zone: this machine's local
    time) or a duration back from now (`-10m`, `-1h30m`)."""
    now = now or datetime.now(UTC)
    stripped = text.strip()
    if stripped.startswith("-"):
        try:
            return now - parse_duration(stripped[1:])
        except DurationError as err:
            raise UsageError(f"--at {text!r}: {err}", hint="like -10m, -1h30m or -2d") from None
    cleaned = re.sub(r"([+-]\d\d)$", r"\1:00", stripped.replace("T", " ", 1))
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not a moment",
            hint='give a timestamp like "2026-01-14 16:02:00+00" or a duration back like -10m',
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def show_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(sep=" ", timespec="seconds")


@dataclass
class PitrPlan:
    source: str
    target: RecoveryTarget
    base: BaseBackup
    window: Window
    wal: list[StoredWal]
    into: str
    into_kind: str  # "database" | "datadir"
    databases: list[tuple[str, str]] = field(default_factory=list)  # (in the backup, target)
    base_bytes: int = 0
    wal_bytes: int = 0

    @property
    def estimated_seconds(self) -> float:
        return 5.0 + (self.base_bytes + self.wal_bytes) / (RESTORE_MB_PER_S * 1024 * 1024)

    def to_json(self, redact: Any = lambda text: text) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target.describe(),
            "base_backup": {
                "snapshot_id": self.base.snapshot.id,
                "name": self.base.snapshot.name,
                "finished_at": show_time(self.base.finished_at),
                "bytes": self.base_bytes,
            },
            "wal": {
                "files": len(self.wal),
                "bytes": self.wal_bytes,
                "first": self.wal[0].name if self.wal else None,
                "last": self.wal[-1].name if self.wal else None,
            },
            "window": {"from": show_time(self.window.start), "to": show_time(self.window.end)},
            "into": redact(self.into),
            "into_kind": self.into_kind,
            "databases": [{"from": a, "into": b} for a, b in self.databases],
            "estimated_seconds": math.ceil(self.estimated_seconds),
        }

    def lines(self, redact: Any = lambda text: text) -> list[str]:
        segs = [w for w in self.wal if (p := parse_wal_name(w.name)) and p.kind == "segment"]
        out = [
            f"point-in-time restore of {self.source} to {self.target.describe()}",
            f"  base backup: {self.base.label} (snapshot {self.base.snapshot.short_id}, "
            f"finished {show_time(self.base.finished_at)}, {_mib(self.base_bytes)})",
            f"  WAL: {len(self.wal)} file(s), {_mib(self.wal_bytes)}"
            + (f", {segs[0].name} .. {segs[-1].name}" if segs else ""),
            f"  recoverable window of that base backup: {show_time(self.window.start)} .. "
            f"{show_time(self.window.end)}",
        ]
        if self.into_kind == "database":
            for src, dst in self.databases:
                out.append(f"  database {src} -> {dst} at {redact(self.into)}")
        else:
            out.append(f"  a whole cluster into the data folder {self.into}")
        out.append(f"  estimated time: about {math.ceil(self.estimated_seconds)} s")
        return out


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def window_text(report: ChainReport) -> str:
    if not report.windows:
        return "nothing is recoverable yet (no base backup with its WAL archived)"
    return "; ".join(
        f"{show_time(w.start)} .. {show_time(w.end)} (base backup {w.base.label})"
        for w in report.windows
    )


def choose_base(report: ChainReport, target: RecoveryTarget, now: datetime) -> Window:
    if not report.windows:
        raise OutsideWindowError(
            "nothing to recover from: " + window_text(report),
            hint="take a base backup (`safehold pitr basebackup`) once WAL archiving runs",
        )
    if target.time is None:
        return max(report.windows, key=lambda w: w.base.finished_at)
    moment = target.time.timestamp()
    fitting = [w for w in report.windows if w.start <= moment <= w.end]
    if not fitting:
        raise OutsideWindowError(
            f"{target.time.isoformat(sep=' ', timespec='seconds')} is outside the recoverable "
            f"window: {window_text(report)}"
        )
    return max(fitting, key=lambda w: w.base.finished_at)


def wal_to_fetch(
    archive: WalArchive, report: ChainReport, base: BaseBackup, target: RecoveryTarget
) -> list[StoredWal]:
    size = report.segment_size
    start = base.start_segment.number
    chosen: list[StoredWal] = []
    for name in sorted(archive.files):
        parsed = parse_wal_name(name)
        if parsed is None or parsed.kind == "partial" or parsed.timeline < base.timeline:
            continue
        if parsed.kind == "history":
            chosen.append(archive.files[name][0])
    for tli, chain in sorted(report.timelines.items()):
        if tli < base.timeline:
            continue
        after = 0
        for number in sorted(chain.segments):
            if number < start:
                continue
            stored = chain.segments[number]
            if target.lsn is not None and number > target.lsn // size + 1:
                break
            if target.time is not None and stored.archived_at > target.time.timestamp():
                after += 1
                if after > _SAFETY_SEGMENTS + 1:
                    break
            chosen.append(stored)
    return chosen


def plan_pitr_restore(
    repo: Repository,
    plan: Plan,
    source_name: str | None,
    into: str,
    target: RecoveryTarget,
    now: datetime | None = None,
    *,
    scratch_only: bool = False,
) -> PitrPlan:
    """Decide the restore (see the module docstring); `scratch_only`: no --into at all, the
    caller recovers in a scratch server of its own (the drill)."""
    config = pitr_source(plan, source_name)
    now = now or datetime.now(UTC)
    archive = WalArchive.load(repo)
    bases = base_backups(repo.list_snapshots(), config.name)
    report = build_chain(archive, bases)
    window = choose_base(report, target, now)
    wal = wal_to_fetch(archive, report, window.base, target)
    summary = window.base.snapshot.safehold.get("summary") or {}
    pitr = PitrPlan(
        config.name, target, window.base, window, wal, into, "database",
        base_bytes=int(summary.get("bytes_total") or 0), wal_bytes=sum(w.size for w in wal),
    )  # fmt: skip
    if re.match(r"^postgres(ql)?://", into, re.IGNORECASE):
        source = PostgresSource(config.name, config.url, config.database_names() or None)
        if source.is_production_target(into):
            raise UsageError(
                "refusing a point-in-time restore into the source's live database",
                hint="restore into a NEW database (another name), then copy what you need back",
            )
        location = PgLocation.parse(into)
        if not location.dbname:
            raise UsageError("--into needs a database name in the URL",
                             hint="e.g. postgresql://user@host/shop_restored")  # fmt: skip
        names = config.database_names()
        wanted = location.source_db or (names[0] if names else None)
        if wanted is None or (len(config.database_names()) > 1 and not location.source_db):
            raise UsageError(
                f"source {config.name} has several databases: say which one",
                hint="add ?source_db=NAME to the --into URL",
            )
        pitr.databases = [(wanted, location.dbname)]
    elif scratch_only:
        pitr.into_kind = "scratch"
    else:
        pitr.into_kind = "datadir"
        check_empty_datadir(Path(into))
    return pitr


def pitr_source(plan: Plan, name: str | None) -> PostgresConfig:
    """The PostgreSQL source a PITR command acts on (`--source NAME`, or the only one). A
    managed database whose PITR is the provider's (`pitr = "provider:7d"`) is refused with
    the honest reason: safehold cannot read that server's WAL."""
    candidates = [s for s in plan.sources if isinstance(s, PostgresConfig)]
    if name is not None:
        config = plan.source(name)
        if not isinstance(config, PostgresConfig):
            raise UsageError(
                f"source {name} is not a PostgreSQL source: point-in-time recovery is for "
                "PostgreSQL"
            )
    elif len(candidates) != 1:
        names = ", ".join(c.name for c in candidates) or "none"
        raise UsageError("say which PostgreSQL source", hint=f"--source NAME (PostgreSQL: {names})")
    else:
        config = candidates[0]
    if config.provider_pitr_window is not None:
        raise UsageError(
            f"point-in-time recovery of {config.name} is the provider's "
            f'(pitr = "{config.pitr}"): safehold cannot read a managed server\'s WAL',
            hint="restore to a time in the provider's console (`safehold runbook` lists the "
            'steps); for safehold\'s own PITR the server must be yours: pitr = "wal"',
        )
    return config


@dataclass
class PitrReport:
    source: str
    into: str
    seconds: float
    summary: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _recovery_stop(log: str) -> str | None:
    for line in log.splitlines():
        if "recovery stopping" in line or "archive recovery complete" in line:
            found = re.search(r"(recovery stopping.*|archive recovery complete.*)", line)
            if found:
                return found.group(1)
    return None


def recover_in_scratch(repo: Repository, pitr: PitrPlan, root: ScratchRoot) -> ThrowawayPostgres:
    """A throwaway server (in `root`) that recovered to the plan's target and promoted."""
    server = ThrowawayPostgres(root)

    def fill(data: Path) -> None:
        build_datadir(repo, pitr.base, pitr.wal, data, pitr.target)

    try:
        server.start_recovered(fill)
    except PitrError:
        raise
    except Exception as err:  # ScratchError with the server's FATAL line
        raise PitrError(
            f"recovery to {pitr.target.describe()} failed: {err}",
            hint="`safehold wal status` shows the window and any gap",
        ) from None
    return server


def recovery_user(source: PostgresSource, environ: Mapping[str, str]) -> str:
    """The role to connect to a recovered copy as: the source's own (it is in the copy)."""
    return source.location.params.get("user") or environ.get("PGUSER") or "postgres"


def execute_pitr_restore(
    repo: Repository, plan: Plan, pitr: PitrPlan, environ: Mapping[str, str] = os.environ
) -> PitrReport:
    started = time.monotonic()
    report = PitrReport(pitr.source, pitr.into, 0.0)
    if pitr.into_kind == "datadir":
        datadir = Path(pitr.into)
        try:
            datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise PitrError(
                f"cannot create the data folder {datadir}: {err.strerror}",
                hint="pick a folder this account may write to",
            ) from None
        base_bytes, wal_bytes = build_datadir(repo, pitr.base, pitr.wal, datadir, pitr.target)
        owner = "postgres" if os.geteuid() == 0 else None
        give_to(datadir, owner)
        report.summary += [
            f"a cluster that recovers to {pitr.target.describe()} is in {datadir} "
            f"(base {_mib(base_bytes)}, WAL {_mib(wal_bytes)})",
            f"start it: pg_ctl -D {datadir} -o '-p PORT' start (it recovers, then promotes; "
            "its postgresql.conf still names the original port and paths)",
        ]
        report.seconds = time.monotonic() - started
        return report
    config = plan.source(pitr.source)
    assert isinstance(config, PostgresConfig)
    source = PostgresSource(config.name, config.url, config.database_names() or None)
    root = ScratchRoot()
    try:
        server = recover_in_scratch(repo, pitr, root)
        stop = _recovery_stop(server.log_text())
        report.details["recovery"] = stop
        if stop:
            report.summary.append(f"recovered: {stop}")
        user = recovery_user(source, environ)
        target = PgLocation.parse(pitr.into)
        for src, dst in pitr.databases:
            _copy_database(server, user, src, source, target, dst, root.path, report)
    finally:
        problems = root.close()
    report.warnings += problems
    report.seconds = time.monotonic() - started
    return report


def _counts(conninfo: str, password: str | None = None) -> dict[str, int]:
    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1"
        ).fetchall()
        counts: dict[str, int] = {}
        for (name,) in rows:
            schema, table = name.split(".", 1)
            query = psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            counts[name] = int(row[0]) if row else 0
    return counts


def _copy_database(
    server: ThrowawayPostgres,
    user: str,
    src: str,
    source: PostgresSource,
    target: PgLocation,
    dst: str,
    scratch: Path,
    report: PitrReport,
) -> None:
    recovered = server.socket_conninfo(user, src)
    dump = scratch / f"{re.sub(r'[^A-Za-z0-9_]', '_', src)}.dump"
    what = f"pg_dump of {src} from the recovered server"
    code, _, stderr = run_tool(
        [source.tool("pg_dump"), "-Fc", "-f", str(dump), "-d", recovered], env=source.pg_env(),
        what=what, error=RestoreError,
    )  # fmt: skip
    if code != 0:
        raise RestoreError(tool_failure(what, code, stderr, []))
    created = source.prepare_restore_target(target, dst)
    what = f"pg_restore into database {dst}"
    code, _, stderr = run_tool(
        [source.tool("pg_restore"), "--no-password", f"--dbname={target.conninfo(dst)}",
         str(dump)], env=source.pg_env(target), what=what,
    )  # fmt: skip
    if code != 0:
        message = tool_failure(what, code, stderr, [target.password])
        if "errors ignored on restore" not in stderr:
            raise RestoreError(message)
        report.warnings.append(message)
    expected = _counts(recovered)
    restored = _counts(target.conninfo(dst), target.password)
    differ = {t: (n, restored.get(t)) for t, n in expected.items() if restored.get(t) != n}
    rows = sum(restored.values())
    report.details.setdefault("databases", {})[dst] = {
        "source_database": src, "created": created, "tables": restored, "rows": rows,
        "verified": not differ,
    }  # fmt: skip
    report.summary.append(
        f"database {src} as it was at {report.details.get('recovery') or 'the target'} -> {dst}: "
        f"{len(restored)} table(s), {rows} row(s)"
        + ("" if not differ else f"; row counts DIFFER for {', '.join(sorted(differ))}")
    )
    if differ:
        report.warnings.append(f"row counts differ after the copy into {dst}: {sorted(differ)}")
