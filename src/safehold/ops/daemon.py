"""`safehold run`: a foreground scheduler for containers and PaaS workers, where there is no
systemd and no cron.

- Each job is started as its own process (`safehold --plan PLAN job NAME`, in a new process
  group), so a crashing job never takes the scheduler down and a shutdown reaches the whole
  job.
- A job still running when it is due again is not started a second time; that run is skipped
  (and said so), not queued.
- When the daemon starts it compares each job's last start (kept in the state folder) with
  the job's schedule: a job that missed one or more runs while the daemon was down runs once,
  right away, like a systemd timer with `Persistent=true`. A job never started before waits for
  its first scheduled time.
- SIGTERM/SIGINT: no new job starts; running jobs get SIGTERM (safehold commands stop cleanly
  and leave the repository intact), are waited for, and the daemon exits 0.
- A heartbeat in the state folder (`daemon` document) lets `safehold status` see it running.

The clock, the waiting and the launching are injected, so tests run days of schedule in
milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from safehold.alerts.store import Document, StateStore, parse_time
from safehold.ops.jobs import Job, safehold_command
from safehold.ops.streamers import Service, Supervisor, stop_all
from safehold.plan.models import Plan

DOCUMENT = "daemon"
HEARTBEAT = timedelta(seconds=60)


class Handle(Protocol):
    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def wait(self, timeout: float) -> int | None: ...


Launcher = Callable[[str], Handle]


@dataclass
class ProcessHandle:
    process: subprocess.Popen[bytes]

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # the job's own process group
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def _spawn(plan: Plan, environ: Mapping[str, str], args: list[str]) -> Handle:
    """`safehold --plan PLAN ARGS…` in its own session, from the plan's folder."""
    process = subprocess.Popen(
        safehold_command(plan, args),
        cwd=plan.base_dir,
        env=dict(environ),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    return ProcessHandle(process)


def process_launcher(plan: Plan, environ: Mapping[str, str]) -> Launcher:
    def launch(job: str) -> Handle:
        return _spawn(plan, environ, ["job", job])

    return launch


def service_launcher(plan: Plan, environ: Mapping[str, str]) -> Callable[[Service], Handle]:
    """Start a long-running service (`safehold --plan PLAN wal-stream --source NAME`)."""

    def launch(service: Service) -> Handle:
        return _spawn(plan, environ, list(service.args))

    return launch


@dataclass
class _Slot:
    job: Job
    next_due: datetime
    handle: Handle | None = None
    started: datetime | None = None


@dataclass
class Daemon:
    jobs: list[Job]
    launcher: Launcher
    clock: Callable[[], datetime]
    wait: Callable[[float], bool]  # sleep up to N seconds; True when asked to stop
    store: StateStore
    say: Callable[[str], None] = lambda message: None
    drill_requested: Callable[[], bool] = lambda: False
    grace: float = 60.0  # how long a stopping job may take after SIGTERM
    supervisor: Supervisor | None = None  # services kept running (ops/streamers.py)
    slots: dict[str, _Slot] = field(default_factory=dict)
    started_count: dict[str, int] = field(default_factory=dict)
    last_beat: datetime | None = None

    def run(self) -> None:
        now = self.clock()
        self._plan_first_runs(now)
        self._heartbeat(now, "running")
        try:
            while True:
                self.tick()
                if self.wait(self._sleep_seconds(self.clock())):
                    break
        finally:
            self._shutdown()

    def tick(self) -> None:
        now = self.clock()
        self._reap(now)
        if self.supervisor is not None:
            self.supervisor.tick(now)
        for slot in self.slots.values():
            if now < slot.next_due:
                continue
            assert slot.job.cron is not None
            if slot.handle is not None:
                self.say(
                    f"{_stamp(now)} {slot.job.name}: still running since "
                    f"{_stamp(slot.started)}; this run is skipped"
                )
            else:
                self._start(slot, now)
            slot.next_due = slot.job.cron.next_after(now)
        drill = self.slots.get("drill")
        if drill is not None and drill.handle is None and self.drill_requested():
            self.say(f"{_stamp(now)} drill: requested (schema change); starting it")
            self._start(drill, now)
        if self.last_beat is None or now - self.last_beat >= HEARTBEAT:
            self._heartbeat(now, "running")

    def _plan_first_runs(self, now: datetime) -> None:
        fired = self.store.read(DOCUMENT).get("last_started", {})
        for job in self.jobs:
            if job.cron is None:
                continue
            last = parse_time(fired.get(job.name))
            due = job.cron.next_after(now)
            missed = job.cron.previous_at_or_before(now)
            if last is not None and last < missed:
                self.say(
                    f"{_stamp(now)} {job.name}: missed its run at {_stamp(missed)}; "
                    "catching up once"
                )
                due = now
            self.slots[job.name] = _Slot(job, due)
            self.say(f"{job.name}: {job.cron.text} — next at {_stamp(due)}")

    def _start(self, slot: _Slot, now: datetime) -> None:
        self.say(f"{_stamp(now)} {slot.job.name}: starting")
        slot.handle = self.launcher(slot.job.name)
        slot.started = now
        self.started_count[slot.job.name] = self.started_count.get(slot.job.name, 0) + 1

        def change(document: Document) -> None:
            document.setdefault("last_started", {})[slot.job.name] = now.isoformat()

        self.store.update(DOCUMENT, change)

    def _reap(self, now: datetime) -> None:
        for slot in self.slots.values():
            if slot.handle is None:
                continue
            code = slot.handle.poll()
            if code is None:
                continue
            verdict = "done" if code == 0 else f"exited {code}"
            self.say(f"{_stamp(now)} {slot.job.name}: {verdict}")
            slot.handle = None
            slot.started = None

    def _sleep_seconds(self, now: datetime) -> float:
        upcoming = [slot.next_due for slot in self.slots.values()]
        until = min(upcoming, default=now + HEARTBEAT)
        seconds = (until - now).total_seconds()
        if any(slot.handle is not None for slot in self.slots.values()) or (
            self.supervisor is not None and self.supervisor.active
        ):
            seconds = min(seconds, 1.0)  # notice finished jobs (and services) promptly
        return max(0.05, min(seconds, HEARTBEAT.total_seconds()))

    def _shutdown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        running = [(s.job.name, s.handle) for s in self.slots.values() if s.handle is not None]
        stop_all(running, self.grace, self.say)
        self._heartbeat(self.clock(), "stopped")

    def _heartbeat(self, now: datetime, status: str) -> None:
        self.last_beat = now

        def change(document: Document) -> None:
            document.update(
                status=status, heartbeat=now.isoformat(), pid=os.getpid(), host=socket.gethostname()
            )
            document["next"] = {
                name: slot.next_due.isoformat() for name, slot in sorted(self.slots.items())
            }

        self.store.update(DOCUMENT, change)


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %z") if moment is not None else "?"


def daemon_alive(store: StateStore, now: datetime) -> bool:
    """Whether a `safehold run` daemon beat recently (and, on this host, its process lives)."""
    document = store.read(DOCUMENT)
    beat = parse_time(document.get("heartbeat"))
    if document.get("status") != "running" or beat is None:
        return False
    if now - beat > 3 * HEARTBEAT:
        return False
    if document.get("host") == socket.gethostname() and isinstance(document.get("pid"), int):
        try:
            os.kill(document["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True
