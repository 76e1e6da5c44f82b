"""Long-running services of a plan: one `safehold wal-stream` per PostgreSQL source with
`pitr = "wal"` and `wal = "stream"`.

Unlike a job, a service runs all the time. `safehold run` keeps it running (the
`Supervisor`: started with the daemon, started again a few seconds after it exits, doubling
up to a minute while it keeps failing, SIGTERM at shutdown); `schedule install` writes a
systemd service with `Restart=always` for it. Cron cannot supervise a process: with a
crontab the install says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from safehold.plan.models import Plan, PostgresConfig


@dataclass(frozen=True)
class Service:
    name: str  # also the systemd unit's suffix
    args: tuple[str, ...]  # the safehold command line after the global options
    source: str


def stream_services(plan: Plan) -> list[Service]:
    return [
        Service(f"wal-stream-{source.name}", ("wal-stream", "--source", source.name), source.name)
        for source in plan.sources
        if isinstance(source, PostgresConfig) and source.pitr_wal and source.wal == "stream"
    ]


class ServiceHandle(Protocol):
    """What the supervisor needs of a running service (daemon.ProcessHandle)."""

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def wait(self, timeout: float) -> int | None: ...


@dataclass
class _Running:
    service: Service
    handle: ServiceHandle | None = None
    started: datetime | None = None
    next_start: datetime | None = None
    backoff: float = 5.0
    starts: int = 0


@dataclass
class Supervisor:
    services: list[Service]
    launch: Callable[[Service], ServiceHandle]
    say: Callable[[str], None] = lambda message: None
    grace: float = 60.0
    running: dict[str, _Running] = field(default_factory=dict)

    def tick(self, now: datetime) -> None:
        for service in self.services:
            entry = self.running.setdefault(service.name, _Running(service))
            if entry.handle is not None:
                code = entry.handle.poll()
                if code is None:
                    continue
                ran = (now - entry.started).total_seconds() if entry.started else 0.0
                if ran > 60:
                    entry.backoff = 5.0  # it ran a while: the next failure restarts soon
                entry.next_start = now + timedelta(seconds=entry.backoff)
                self.say(f"{service.name}: exited {code} after {ran:.0f} s; starting it again "
                         f"in {entry.backoff:.0f} s")  # fmt: skip
                entry.backoff = min(entry.backoff * 2, 60.0)
                entry.handle = None
            if entry.next_start is None or now >= entry.next_start:
                self.say(f"{service.name}: starting")
                entry.handle = self.launch(service)
                entry.started = now
                entry.starts += 1

    @property
    def active(self) -> bool:
        return bool(self.services)

    def stop(self) -> None:
        live = [e for e in self.running.values() if e.handle is not None]
        stop_all([(e.service.name, e.handle) for e in live if e.handle], self.grace, self.say)
        for entry in live:
            entry.handle = None


def stop_all(
    named: Sequence[tuple[str, ServiceHandle]], grace: float, say: Callable[[str], None]
) -> None:
    """SIGTERM every process first, then wait up to `grace` for each: they stop side by
    side, not one after the other."""
    for name, handle in named:
        say(f"stopping {name} (SIGTERM)")
        handle.terminate()
    for name, handle in named:
        if handle.wait(grace) is None:
            say(f"{name} did not stop within {grace:.0f} s")
