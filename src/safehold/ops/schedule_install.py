"""Installing the plan's schedule: systemd service + timer units (preferred: `Persistent=true`
runs a job missed while the machine was off once it is back), or crontab lines where there
is no systemd. What was installed is recorded in the state folder (`schedule` document), so
`schedule show`, `schedule remove` and `safehold status` know without guessing.

Every unit and line runs `safehold --plan PLAN job NAME` with the Python that installed it,
so the job wraps the command with its lock, pings, alerts and records (app/jobs.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from safehold.alerts.store import Document, StateStore
from safehold.errors import SafeholdError, UsageError
from safehold.ops.jobs import Job, plan_path, safehold_command, schedule_of, timed_jobs, unit_safe
from safehold.ops.state import DRILL_REQUEST, STATE_ENV, state_dir
from safehold.ops.streamers import stream_services
from safehold.plan.envfile import read_env_file
from safehold.plan.locate import DOTENV_FILENAME
from safehold.plan.models import Plan

Kind = Literal["systemd", "crontab"]
DOCUMENT = "schedule"
CRONTAB_ENV = "SAFEHOLD_CRONTAB"  # the crontab program (default: crontab on PATH)


@dataclass(frozen=True)
class UnitFile:
    name: str
    text: str


def unit_prefix(plan: Plan) -> str:
    return f"safehold-{unit_safe(plan.app)}-{unit_safe(plan.env)}"


def systemd_running() -> bool:
    """sd_booted(): systemd is the init system of this machine (not just installed)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def default_unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def _quote(arg: str) -> str:
    """An argument for ExecStart= (systemd's own quoting; `%` and `$` are special)."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and all(c.isalnum() or c in "-_./:=@+," for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _environment(environ: Mapping[str, str]) -> list[str]:
    if environ.get(STATE_ENV):
        return [f"Environment={_quote(STATE_ENV + '=' + environ[STATE_ENV])}"]
    return []


def systemd_units(plan: Plan, now: datetime, environ: Mapping[str, str]) -> list[UnitFile]:
    prefix = unit_prefix(plan)
    header = (
        f"# Written by `safehold schedule install` for {plan_path(plan)}.\n"
        "# `safehold schedule remove` deletes it; edit the plan's [schedule] and install again.\n"
    )
    units: list[UnitFile] = []
    jobs = timed_jobs(plan, now)
    for job in jobs:
        assert job.cron is not None
        what = f"safehold {job.name} of {plan.app} ({plan.env})"
        command = " ".join(_quote(arg) for arg in safehold_command(plan, ["job", job.name]))
        service = [
            header + "[Unit]",
            f"Description={what}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={_quote(str(plan.base_dir))}",
            f"ExecStart={command}",
            *_environment(environ),
            "Nice=10",
            "IOSchedulingClass=best-effort",
            "IOSchedulingPriority=7",
            "",
        ]
        units.append(UnitFile(f"{prefix}-{job.name}.service", "\n".join(service)))
        timer = [
            header + "[Unit]",
            f"Description=When to run {what}: {job.cron.text}",
            "",
            "[Timer]",
            *[f"OnCalendar={value}" for value in job.cron.on_calendar()],
            "Persistent=true",
            "AccuracySec=1min",
            f"Unit={prefix}-{job.name}.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
        units.append(UnitFile(f"{prefix}-{job.name}.timer", "\n".join(timer)))
    if schedule_of(plan).drill_on_request and any(job.name == "drill" for job in jobs):
        flag = state_dir(plan, environ) / f"{DRILL_REQUEST}.json"
        path_unit = [
            header + "[Unit]",
            f"Description=Run the drill of {plan.app} ({plan.env}) when one is requested "
            "(schema change)",
            "",
            "[Path]",
            f"PathExists={flag}",
            f"Unit={prefix}-drill.service",
            "",
            "[Install]",
            "WantedBy=paths.target",
            "",
        ]
        units.append(UnitFile(f"{prefix}-drill.path", "\n".join(path_unit)))
    for stream in stream_services(plan):  # long-running: systemd keeps it up
        command = " ".join(_quote(arg) for arg in safehold_command(plan, list(stream.args)))
        unit = [
            header + "[Unit]",
            f"Description=safehold WAL streaming of {stream.source} ({plan.app}, {plan.env})",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            f"WorkingDirectory={_quote(str(plan.base_dir))}",
            f"ExecStart={command}",
            *_environment(environ),
            "Restart=always",
            "RestartSec=5",
            "KillSignal=SIGTERM",
            "KillMode=mixed",
            "TimeoutStopSec=90",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
        units.append(UnitFile(f"{prefix}-{stream.name}.service", "\n".join(unit)))
    return units


def crontab_marker(plan: Plan) -> tuple[str, str]:
    label = f"{unit_prefix(plan)} ({plan_path(plan)})"
    return f"# BEGIN {label}", f"# END {label}"


def _sh(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=@+," for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def crontab_lines(plan: Plan, now: datetime, environ: Mapping[str, str]) -> list[str]:
    """The plan's block for a crontab: one line per timed job (plus a drill-request check
    every 15 minutes), output appended to a log in the state folder."""
    begin, end = crontab_marker(plan)
    logs = state_dir(plan, environ) / "logs"
    env = f"{STATE_ENV}={_sh(environ[STATE_ENV])} " if environ.get(STATE_ENV) else ""
    lines = [
        begin,
        "# Written by `safehold schedule install`; removed by `safehold schedule "
        "remove`. cron does not run missed jobs: `safehold watch` notices.",
    ]
    jobs = timed_jobs(plan, now)
    for job in jobs:
        assert job.cron is not None
        lines.append(_cron_line(plan, job.cron.expression, job.name, [], env, logs))
    if schedule_of(plan).drill_on_request and any(job.name == "drill" for job in jobs):
        lines.append(_cron_line(plan, "*/15 * * * *", "drill", ["--if-requested"], env, logs))
    lines.append(end)
    return lines


def _cron_line(
    plan: Plan, expression: str, job: str, extra: list[str], env: str, logs: Path
) -> str:
    command = " ".join(_sh(arg) for arg in safehold_command(plan, ["job", job, *extra]))
    # `%` is a newline in crontab commands; paths with it are escaped.
    run = f"cd {_sh(str(plan.base_dir))} && mkdir -p {_sh(str(logs))} && {env}{command}"
    line = f"{expression} {run} >>{_sh(str(logs / f'{job}.log'))} 2>&1"
    return line.replace("%", "\\%")


def _crontab_program(environ: Mapping[str, str]) -> str | None:
    return environ.get(CRONTAB_ENV) or shutil.which("crontab")


def read_crontab(environ: Mapping[str, str]) -> list[str]:
    program = _crontab_program(environ)
    if program is None:
        raise UsageError("crontab is not installed here", hint="install cron, or use systemd")
    done = subprocess.run([program, "-l"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if "no crontab" in done.stderr.lower():
            return []
        raise UsageError(
            f"crontab -l failed: {done.stderr.strip() or done.returncode}",
            hint="check that this user may use cron (/etc/cron.allow)",
        )
    return done.stdout.splitlines()


def write_crontab(lines: list[str], environ: Mapping[str, str]) -> None:
    program = _crontab_program(environ)
    assert program is not None
    text = "\n".join(lines) + "\n"
    done = subprocess.run([program, "-"], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(
            f"crontab refused the new table: {done.stderr.strip() or done.returncode}",
            hint="nothing was changed; check the lines with `safehold schedule install --print`",
        )


def without_block(lines: list[str], begin: str, end: str) -> list[str]:
    kept: list[str] = []
    inside = False
    for line in lines:
        if line == begin:
            inside = True
        elif line == end and inside:
            inside = False
        elif not inside:
            kept.append(line)
    return kept


@dataclass
class InstallResult:
    kind: Kind
    where: str
    files: list[str]
    enabled: bool
    notes: list[str]


Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def _systemctl(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def choose_kind(requested: Kind | None, unit_dir: Path | None, environ: Mapping[str, str]) -> Kind:
    if requested is not None:
        return requested
    if unit_dir is not None or systemd_running():
        return "systemd"
    if _crontab_program(environ) is not None:
        return "crontab"
    raise UsageError(
        "neither systemd nor cron runs on this machine",
        hint="in a container or PaaS worker run `safehold run` as the long-lived process (it "
        "schedules the jobs itself); or write units elsewhere with --unit-dir DIR",
    )


def install_schedule(
    plan: Plan,
    store: StateStore,
    now: datetime,
    environ: Mapping[str, str],
    *,
    kind: Kind,
    unit_dir: Path | None = None,
    user: bool = False,
    systemctl: Runner = _systemctl,
) -> InstallResult:
    if plan.schedule is None:
        raise UsageError(
            "the plan has no [schedule] table",
            hint='add [schedule] with backup = "daily at 02:00" (the other jobs have defaults), '
            "then run `safehold schedule install` again",
        )
    previous = store.read(DOCUMENT)
    if previous.get("kind") and previous.get("kind") != kind:
        remove_schedule(plan, store, environ, systemctl=systemctl)
    if kind == "crontab":
        result = _install_crontab(plan, now, environ)
    else:
        result = _install_systemd(plan, now, environ, unit_dir, user, systemctl)
    result.notes.extend(password_notes(plan))
    record: Document = {
        "kind": result.kind,
        "where": result.where,
        "files": result.files,
        "enabled": result.enabled,
        "user": user,
        "installed_at": now.isoformat(),
        "plan": str(plan_path(plan)),
        "jobs": {
            job.name: job.cron.expression for job in timed_jobs(plan, now) if job.cron is not None
        },
    }
    store.write(DOCUMENT, record)
    return result


def _install_crontab(plan: Plan, now: datetime, environ: Mapping[str, str]) -> InstallResult:
    begin, end = crontab_marker(plan)
    current = read_crontab(environ)
    block = crontab_lines(plan, now, environ)
    write_crontab([*without_block(current, begin, end), *block], environ)
    notes = [
        f"cron cannot keep `safehold {' '.join(service.args)}` running: use systemd "
        "(`schedule install --systemd`) or `safehold run`, which supervise it"
        for service in stream_services(plan)
    ]
    return InstallResult("crontab", "the crontab of this user", [], True, notes)


def _install_systemd(
    plan: Plan,
    now: datetime,
    environ: Mapping[str, str],
    unit_dir: Path | None,
    user: bool,
    systemctl: Runner,
) -> InstallResult:
    folder = unit_dir or default_unit_dir(user)
    units = systemd_units(plan, now, environ)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{unit_prefix(plan)}-*"):
            if stale.name not in {unit.name for unit in units}:
                stale.unlink()
        for unit in units:
            (folder / unit.name).write_text(unit.text, encoding="utf-8")
    except OSError as err:
        raise SafeholdError(
            f"cannot write units into {folder}: {err.strerror}",
            hint="run as root for /etc/systemd/system, or pass --user (or --unit-dir DIR)",
        ) from None
    files = [str(folder / unit.name) for unit in units]
    notes: list[str] = []
    enabled = False
    if unit_dir is None and systemd_running():
        scope = ["--user"] if user else []
        streams = {
            f"{unit_prefix(plan)}-{service.name}.service" for service in stream_services(plan)
        }
        triggers = [
            u.name for u in units if u.name.endswith((".timer", ".path")) or u.name in streams
        ]
        for args in (["daemon-reload"], ["enable", "--now", *triggers]):
            done = systemctl([*scope, *args])
            if done.returncode != 0:
                raise SafeholdError(
                    f"systemctl {' '.join(args[:2])} failed: {done.stderr.strip()}",
                    hint=f"the units are written in {folder}; run `systemctl {' '.join(scope)} "
                    f"enable --now {' '.join(triggers)}` by hand to see why",
                )
        enabled = True
        if user:
            notes.append(
                "user timers run only while you are logged in unless lingering is on: "
                "`loginctl enable-linger`"
            )
    else:
        notes.append(
            f"systemd does not manage {folder} here: units written, not enabled "
            "(copy them to /etc/systemd/system and `systemctl enable --now` the timers)"
        )
    return InstallResult("systemd", str(folder), files, enabled, notes)


def password_notes(plan: Plan) -> list[str]:
    """Scheduled jobs do not see your shell: a password in a variable must reach them."""
    dotenv = read_env_file(plan.base_dir / DOTENV_FILENAME, strict=False)
    notes = []
    for destination in plan.destinations:
        variable = destination.password_env
        if variable is None or variable in dotenv:
            continue
        notes.append(
            f"destination {destination.name} reads its password from ${variable}: jobs get "
            f"the plan folder's .env, so put {variable}=… there (chmod 600), or use "
            "password_file / password_command in the plan"
        )
    return notes


def remove_schedule(
    plan: Plan, store: StateStore, environ: Mapping[str, str], *, systemctl: Runner = _systemctl
) -> list[str]:
    """Undo what `install_schedule` recorded; returns what was removed."""
    record = store.read(DOCUMENT)
    removed: list[str] = []
    if record.get("kind") == "crontab":
        begin, end = crontab_marker(plan)
        current = read_crontab(environ)
        kept = without_block(current, begin, end)
        if kept != current:
            write_crontab(kept, environ)
            removed.append("the crontab lines")
    elif record.get("kind") == "systemd":
        files = [Path(name) for name in record.get("files", [])]
        if record.get("enabled") and systemd_running():
            scope = ["--user"] if record.get("user") else []
            triggers = [f.name for f in files if f.suffix in (".timer", ".path")]
            systemctl([*scope, "disable", "--now", *triggers])
        for file in files:
            if file.exists():
                file.unlink()
                removed.append(str(file))
        if record.get("enabled") and systemd_running():
            systemctl([*(["--user"] if record.get("user") else []), "daemon-reload"])
    store.delete(DOCUMENT)
    return removed


def installed_problems(plan: Plan, store: StateStore, environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the recorded installation (files gone, lines removed, plan
    changed since), in words; empty when it matches."""
    record = store.read(DOCUMENT)
    problems: list[str] = []
    if record.get("kind") == "systemd":
        missing = [name for name in record.get("files", []) if not Path(name).exists()]
        if missing:
            problems.append(f"unit files are gone: {', '.join(Path(m).name for m in missing)}")
    elif record.get("kind") == "crontab":
        begin, _ = crontab_marker(plan)
        try:
            if begin not in read_crontab(environ):
                problems.append("the crontab lines are gone")
        except SafeholdError as err:
            problems.append(err.message)
    return problems


def plan_changed(plan: Plan, store: StateStore, now: datetime) -> bool:
    record = store.read(DOCUMENT)
    wanted = {job.name: job.cron.expression for job in timed_jobs(plan, now) if job.cron}
    return bool(record.get("kind")) and record.get("jobs") != wanted


def job_list(plan: Plan, now: datetime) -> list[Job]:
    return timed_jobs(plan, now)
