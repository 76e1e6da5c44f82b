"""Point-in-time recovery commands: wal-push, wal status, pitr setup, pitr basebackup."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from safehold.app.inspect import human_bytes
from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode, UsageError
from safehold.pitr.basebackup import take_base_backup
from safehold.pitr.chain import ChainReport, base_backups, build_chain
from safehold.pitr.health import streamer_slot
from safehold.pitr.restore import pitr_source, show_time
from safehold.pitr.setup import apply_settings, check_server
from safehold.pitr.spool import Pusher
from safehold.pitr.spoolfile import (
    ACK_WORDS,
    DEFAULT_MAX_FILES,
    acknowledge,
    clean_stale_temp_files,
    pusher_lock,
    pusher_running,
    pusher_started,
    spooled_names,
)
from safehold.pitr.store import WalArchive, describe_file, push_files
from safehold.pitr.stream import SlotState, apply_fixes, check_streaming, fix_statements
from safehold.plan.models import Plan, PostgresConfig
from safehold.sources.postgres import PostgresSource

SPOOL_ENV = "SAFEHOLD_WAL_SPOOL"


def _spool_path(spool: str | None) -> Path | None:
    value = spool or os.environ.get(SPOOL_ENV)
    return Path(value) if value else None


def _global_args(state: CliState) -> list[str]:
    """The global options this process got, for the pusher it starts."""
    args: list[str] = []
    if state.plan_path:
        args += ["--plan", os.path.abspath(state.plan_path)]
    request = state.repo_options
    if request.location:
        args += ["-r", request.location]
    if request.password_file:
        args += ["--password-file", request.password_file]
    if request.password_command:
        args += ["--password-command", request.password_command]
    return args


@click.command("wal-push")
@click.argument("path", required=False)
@click.option("--async", "async_", is_flag=True,
              help="Copy the segment into the local spool (fsync'd) and return; a pusher "
              "uploads it (started on demand).")  # fmt: skip
@click.option("--spool", help=f"The spool folder for --async/--daemon (default: ${SPOOL_ENV}).")
@click.option("--daemon", is_flag=True, help="Run the pusher: upload the spool until stopped.")
@click.option("--idle-exit", type=int, default=None,
              help="With --daemon: stop after this many seconds with nothing to push.")  # fmt: skip
@click.option("--wal-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --daemon: the server's pg_wal; store its ready segments ahead "
              "(wal-push --async passes it).")  # fmt: skip
@click.option("--max-spool", type=int, default=DEFAULT_MAX_FILES, show_default=True,
              help="With --async: refuse (PostgreSQL retries) once the spool holds this "
              "many.")  # fmt: skip
@pass_state
def wal_push(
    state: CliState,
    path: str | None,
    async_: bool,
    spool: str | None,
    daemon: bool,
    idle_exit: int | None,
    wal_dir: Path | None,
    max_spool: int,
) -> int:
    """Archive one WAL file (PostgreSQL's archive_command: safehold wal-push %p).

    Exit 0 only once the file is stored: in the repository (default), or in the local spool
    (--async). The same file pushed twice succeeds; other content under the same name fails.
    """
    spool_dir = _spool_path(spool)
    if daemon:
        if spool_dir is None:
            raise UsageError("--daemon needs the spool folder", hint=f"--spool DIR or ${SPOOL_ENV}")
        return _run_pusher(state, spool_dir, idle_exit, wal_dir)
    if path is None:
        raise UsageError(
            "give the WAL file to push", hint="archive_command = 'safehold wal-push %p'"
        )
    source = Path(path)
    if async_:
        if spool_dir is None:
            raise UsageError("--async needs the spool folder", hint=f"--spool DIR or ${SPOOL_ENV}")
        outcome = acknowledge(spool_dir, source, _global_args(state), max_spool)
        state.say(f"{source.name}: {ACK_WORDS[outcome]}")
        return ExitCode.OK
    wal = describe_file(source)
    repo = state.open()
    result = push_files(repo, [wal])
    state.say(f"{wal.name}: {'stored' if result.stored else 'already stored (same content)'}")
    return ExitCode.OK


def _run_pusher(state: CliState, spool: Path, idle_exit: int | None, wal_dir: Path | None) -> int:
    if not spool.is_dir():
        raise UsageError(f"the spool folder {spool} does not exist", hint=f"mkdir -p {spool}")
    with pusher_lock(spool) as held:
        if held is None:
            state.say(f"a pusher already runs for {spool}")
            return ExitCode.OK
        pusher_started(spool)
        clean_stale_temp_files(spool)
        if wal_dir is not None:  # wal-push --async waits for the read-ahead of this pg_wal
            wal_dir = wal_dir.absolute()
            held.write(f"{wal_dir}\n")
            held.flush()

        def log(line: str) -> None:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            click.echo(f"{stamp} {line}", err=True)

        pusher = Pusher(spool, state.open, log=log, wal_dir=wal_dir)
        ahead = f", reading ahead in {wal_dir}" if wal_dir is not None else ""
        log(f"pusher {os.getpid()} started for {spool}{ahead}")
        pusher.run(idle_exit=idle_exit)
        log("pusher idle: stopped")
    return ExitCode.OK


# ----- wal status ------------------------------------------------------------------------------


def _ago(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    seconds = max(0.0, time.time() - epoch)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def chain_lines(report: ChainReport) -> list[str]:
    lines = []
    if not report.timelines:
        lines.append("no WAL archived yet")
    for tli, chain in sorted(report.timelines.items()):
        newest = max(s.archived_at for s in chain.segments.values())
        size = sum(s.size for s in chain.segments.values())
        lines.append(
            f"timeline {tli}: {len(chain.segments)} segment(s), {human_bytes(size)}, "
            f"{chain.segments[chain.first].name} .. {chain.segments[chain.last].name}, "
            f"newest handed over {_ago(newest)}"
        )
        for gap in chain.gaps:
            lines.append(f"  GAP: {gap.count} segment(s) missing: {gap.first_missing} .. "
                         f"{gap.last_missing}")  # fmt: skip
    if report.base_backups:
        lines.append(f"base backups: {len(report.base_backups)}")
    for window in report.windows:
        lines.append(
            f"recoverable: {show_time(window.start)} .. {show_time(window.end)} (timeline "
            f"{window.timeline}, base backup {window.base.label})"
        )
    if not report.windows:
        lines.append("recoverable: nothing yet (a base backup and its WAL are needed)")
    for problem in report.problems:
        lines.append(f"problem: {problem}")
    return lines


@click.group("wal")
def wal() -> None:
    """The WAL archive of point-in-time recovery."""


@wal.command("status")
@click.option("--source", "source_name", help="Only base backups of this source.")
@click.option("--spool", help=f"Also show what waits in this spool (default: ${SPOOL_ENV}).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def wal_status(state: CliState, source_name: str | None, spool: str | None, as_json: bool) -> int:
    """Recoverable window per timeline, archive lag and gaps. Exit 3 when there is a gap or
    a base backup whose WAL is missing."""
    plan = state.plan() if state.has_plan() else None
    repo = state.open(plan)
    archive = WalArchive.load(repo)
    report = build_chain(archive, base_backups(repo.list_snapshots(), source_name))
    lag = time.time() - report.newest_archived if report.newest_archived else None
    spool_dir = _spool_path(spool)
    waiting = spooled_names(spool_dir) if spool_dir else []
    slot = _streamer_slot(plan, source_name) if plan is not None else None
    if as_json:
        document = report.to_json()
        document["seconds_since_newest"] = round(lag, 1) if lag is not None else None
        document["slot"] = slot.to_json() if slot is not None else None
        if spool_dir:
            document["spool"] = {"path": str(spool_dir), "waiting": len(waiting),
                                 "pusher_running": pusher_running(spool_dir)}  # fmt: skip
        state.emit_json(document)
    else:
        for line in chain_lines(report):
            state.say(line)
        if report.newest_archived:
            state.say(f"archive lag: newest WAL file handed over {_ago(report.newest_archived)}")
        if spool_dir:
            running = "running" if pusher_running(spool_dir) else "NOT running"
            state.say(f"spool {spool_dir}: {len(waiting)} file(s) waiting, pusher {running}")
        if slot is not None:
            state.say(_slot_line(slot))
    lost = slot is not None and slot.lost
    return ExitCode.PARTIAL if report.problems or lost else ExitCode.OK


def _streamer_slot(plan: Plan, source_name: str | None) -> SlotState | None:
    """When the plan's PostgreSQL source streams its WAL: the server's slot for it."""
    configs = [s for s in plan.sources if isinstance(s, PostgresConfig) and s.wal == "stream"]
    chosen = [c for c in configs if source_name in (None, c.name)]
    return streamer_slot(chosen[0]) if len(chosen) == 1 else None


def _slot_line(slot: SlotState) -> str:
    problem = slot.problem()
    if problem is not None:
        return f"slot: {problem}"
    held = human_bytes(slot.retained_bytes or 0)
    return f"slot {slot.name}: in use by the streamer, the server keeps {held} of WAL for it"


# ----- pitr setup / basebackup -----------------------------------------------------------------


def _archive_command(state: CliState, plan: Plan, mode: str, spool: Path) -> str:
    exe = shutil.which("safehold")
    prefix = [exe] if exe else [sys.executable, "-m", "safehold"]
    plan_file = str(plan.file.resolve()) if plan.file else None
    args = [*prefix, *(["--plan", plan_file] if plan_file else []), "wal-push"]
    if mode == "async":
        args += ["--async", "--spool", str(spool)]
    return shlex.join(args) + " %p"


@click.group("pitr")
def pitr() -> None:
    """Point-in-time recovery for PostgreSQL: setup and base backups."""


@pitr.command("setup")
@click.option("--source", "source_name", help="The PostgreSQL source (default: the only one).")
@click.option("--mode", type=click.Choice(["async", "sync", "stream"]), default=None,
              help="async: spool locally, a pusher uploads (keeps up with a busy server); "
              "sync: each segment is in the repository before PostgreSQL may recycle "
              "it; stream: safehold wal-stream over a replication slot (default: stream "
              "when the source says wal = \"stream\", else async).")  # fmt: skip
@click.option("--spool", default="/var/lib/safehold/wal-spool", show_default=True,
              help="The spool folder (async mode); PostgreSQL's account must write to "
              "it.")  # fmt: skip
@click.option("--apply", "apply_", is_flag=True,
              help="Run the ALTER SYSTEM statements (needs a superuser).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def pitr_setup(
    state: CliState,
    source_name: str | None,
    mode: str | None,
    spool: str,
    apply_: bool,
    as_json: bool,
) -> int:
    """Check the server for WAL archiving; print (or --apply) the settings it needs."""
    plan = state.require_plan("pitr setup")
    config = pitr_source(plan, source_name)
    source = PostgresSource(config.name, config.url, config.database_names() or None)
    rpo = config.rpo or plan.targets.rpo
    mode = mode or ("stream" if config.wal == "stream" else "async")
    if mode == "stream":
        return _stream_setup(state, config, source, rpo, apply_, as_json)
    command = _archive_command(state, plan, mode, Path(spool))
    report = check_server(source, command, rpo)
    applied = False
    if apply_ and report.statements:
        apply_settings(source, report)
        applied = True
    if as_json:
        document = report.to_json()
        document.update(applied=applied, mode=mode, spool=spool if mode == "async" else None)
        state.emit_json(document)
        return ExitCode.OK if report.ok or applied else ExitCode.PARTIAL
    state.say(f"PostgreSQL {report.server_version} at {config.location()} (source {config.name})")
    for check in report.checks:
        mark = "ok  " if check.ok else "FIX "
        state.say(f"  {mark} {check.name} = {check.current!r}" +
                  ("" if check.ok else f" (wanted: {check.wanted})"))  # fmt: skip
    for problem in report.problems:
        state.say(f"  problem: {problem}")
    if report.statements:
        state.say("run as a superuser:" if not applied else "applied:")
        for statement in report.statements:
            state.say(f"  {statement};")
        if report.needs_restart:
            state.say("then restart PostgreSQL (wal_level / archive_mode / max_wal_senders "
                      "take effect only on restart)")  # fmt: skip
    if mode == "async":
        state.say(f"spool: mkdir -p {spool} && chown postgres: {spool} (async mode: a segment "
                  "is acknowledged once fsync'd there; the pusher uploads it)")  # fmt: skip
    state.say(f"archive_timeout {int(rpo.total_seconds() // 2)} s or less meets the RPO of "
              f"{int(rpo.total_seconds())} s; PostgreSQL's account must read the plan and its "
              ".env")  # fmt: skip
    state.say("then take the first base backup: safehold pitr basebackup"
              + (f" --source {config.name}" if source_name else ""))  # fmt: skip
    return ExitCode.OK if report.ok or applied else ExitCode.PARTIAL


def _stream_setup(
    state: CliState,
    config: PostgresConfig,
    source: PostgresSource,
    rpo: timedelta,
    apply_: bool,
    as_json: bool,
) -> int:
    """`pitr setup --mode stream`: the replication rights, senders, slot and archive_timeout
    that `safehold wal-stream` needs (pitr/stream.py)."""
    checks = check_streaming(source, config.wal_slot, rpo)
    statements = fix_statements(checks)
    applied = False
    if apply_ and statements:
        apply_fixes(source, statements)
        applied = True
        checks = check_streaming(source, config.wal_slot, rpo)
    left = [c for c in checks if not c.ok]
    restart = any(c.needs_restart for c in left)
    if as_json:
        state.emit_json({"mode": "stream", "ok": not left, "applied": applied,
                         "stream": [c.to_json() for c in checks], "statements": statements,
                         "needs_restart": restart, "slot": config.wal_slot})  # fmt: skip
        return ExitCode.OK if not left else ExitCode.PARTIAL
    state.say(f"streaming WAL from {config.location()} (source {config.name}, slot "
              f"{config.wal_slot})")  # fmt: skip
    for check in checks:
        state.say(f"  {'ok  ' if check.ok else 'FIX '} {check.name}: {check.current}"
                  + ("" if check.ok else f" -> {check.fix}"))  # fmt: skip
    if statements:
        state.say("applied:" if applied else "run as a superuser:")
        for statement in statements:
            state.say(f"  {statement};")
    if restart:
        state.say("then restart PostgreSQL (wal_level / max_wal_senders take effect only on "
                  "restart)")  # fmt: skip
    if any(c.name == "pg_hba_replication" for c in left):
        state.say("pg_hba.conf is a file: edit it as shown above, then SELECT pg_reload_conf()")
    state.say(f'then run the streamer: safehold wal-stream --source {config.name} (set wal = '
              '"stream" in the source so `schedule install` and `safehold run` keep it '
              "running), and take the first base backup after it started")  # fmt: skip
    return ExitCode.OK if not left else ExitCode.PARTIAL


@pitr.command("basebackup")
@click.option("--source", "source_name", help="The PostgreSQL source (default: the only one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def pitr_basebackup(state: CliState, source_name: str | None, as_json: bool) -> int:
    """Take a base backup (pg_basebackup, streamed into the repository)."""
    plan = state.require_plan("pitr basebackup")
    config = pitr_source(plan, source_name)
    source = PostgresSource(config.name, config.url, config.database_names() or None)
    repo = state.open(plan)
    result = take_base_backup(repo, source, app=plan.app, env=plan.env)
    snapshot = result.snapshot
    info = result.info
    if as_json:
        state.emit_json({"snapshot_id": snapshot.id, "name": snapshot.name, **info,
                         "bytes_total": result.stats.bytes_total,
                         "bytes_added": result.stats.bytes_added})  # fmt: skip
    else:
        state.say(
            f"base backup of {config.name}: {human_bytes(result.stats.bytes_total)} "
            f"({human_bytes(result.stats.bytes_added)} new), WAL {info['start_lsn']} .. "
            f"{info['end_lsn']} on timeline {info['timeline']}"
        )
        state.say(f"snapshot {snapshot.short_id} saved as {snapshot.name}")
    return ExitCode.OK


COMMANDS = [wal_push, wal, pitr]
