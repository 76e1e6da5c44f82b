"""`safehold run`'s scheduler on a fast clock: days of schedule in milliseconds. Jobs start on
time, a job still running is never started twice, and runs missed while the daemon was down
are caught up once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

from safehold.alerts.store import StateStore
from safehold.ops.daemon import Daemon
from safehold.ops.jobs import Job, timed_jobs
from tests.ops_helpers import T0, FakeClock, make_plan


@dataclass
class FakeProcess:
    """A job that takes `duration` of the fake clock's time."""

    clock: FakeClock
    ends: datetime
    terminated: bool = False

    def poll(self) -> int | None:
        return 0 if self.terminated or self.clock.now >= self.ends else None

    def terminate(self) -> None:
        self.terminated = True

    def wait(self, timeout: float) -> int | None:
        return self.poll()


@dataclass
class Launches:
    clock: FakeClock
    durations: dict[str, timedelta]
    started: list[tuple[str, datetime]] = field(default_factory=list)
    processes: dict[str, list[FakeProcess]] = field(default_factory=dict)

    def __call__(self, job: str) -> FakeProcess:
        self.started.append((job, self.clock.now))
        process = FakeProcess(self.clock, self.clock.now + self.durations.get(job, timedelta()))
        self.processes.setdefault(job, []).append(process)
        return process

    def times(self, job: str) -> list[datetime]:
        return [moment for name, moment in self.started if name == job]

    def overlapped(self, job: str) -> bool:
        spans = sorted(
            (start, process.ends)
            for start, process in zip(self.times(job), self.processes.get(job, []), strict=True)
        )
        return any(later[0] < earlier[1] for earlier, later in pairwise(spans))


def fast_daemon(
    jobs: list[Job], store: StateStore, clock: FakeClock, launches: Launches, until: datetime
) -> Daemon:
    def wait(seconds: float) -> bool:  # sleeping moves the fake clock; stop at `until`
        clock.advance(timedelta(seconds=seconds))
        return clock.now >= until

    return Daemon(jobs, launcher=launches, clock=clock, wait=wait, store=store)


def plan_jobs_for(tmp_path: Path, schedule: str) -> list[Job]:
    plan = make_plan(tmp_path, f"[schedule]\n{schedule}\n")
    return timed_jobs(plan, T0)


def test_jobs_start_on_time(tmp_path: Path) -> None:
    jobs = plan_jobs_for(
        tmp_path, 'backup = "daily at 02:00"\nwatch = "every 15m"\nprune = "off"\ndrill = "off"'
    )
    assert [job.name for job in jobs] == ["backup", "watch"]
    clock = FakeClock(T0)  # 12:00 UTC
    launches = Launches(clock, {"backup": timedelta(minutes=20), "watch": timedelta(seconds=30)})
    store = StateStore(tmp_path / "state")
    fast_daemon(jobs, store, clock, launches, until=T0 + timedelta(days=3)).run()
    local = [moment.astimezone() for moment in launches.times("backup")]
    assert [(m.hour, m.minute, m.second) for m in local] == [(2, 0, 0)] * 3
    watch = launches.times("watch")
    assert len(watch) == 3 * 24 * 4 - 1  # 12:15 on the first day to 11:45 on the last
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(watch))
    assert store.read("daemon")["status"] == "stopped"


def test_a_running_job_is_never_started_twice(tmp_path: Path) -> None:
    jobs = plan_jobs_for(
        tmp_path, 'backup = "off"\nwatch = "every 15m"\nprune = "off"\ndrill = "off"'
    )
    clock = FakeClock(T0)
    launches = Launches(clock, {"watch": timedelta(minutes=40)})  # longer than its interval
    daemon = fast_daemon(
        jobs, StateStore(tmp_path / "s"), clock, launches, until=T0 + timedelta(hours=2)
    )
    messages: list[str] = []
    daemon.say = messages.append
    daemon.run()
    starts = launches.times("watch")
    assert not launches.overlapped("watch")
    # 12:15 starts (ends 12:55); 12:30 and 12:45 are skipped; 13:00 starts (ends 13:40) ...
    assert [(s - T0) for s in starts] == [timedelta(minutes=m) for m in (15, 60, 105)]
    assert sum("still running" in message for message in messages) == 4


def test_missed_runs_are_caught_up_once_after_a_restart(tmp_path: Path) -> None:
    jobs = plan_jobs_for(
        tmp_path, 'backup = "daily at 02:00"\nwatch = "off"\nprune = "off"\ndrill = "off"'
    )
    store = StateStore(tmp_path / "state")
    clock = FakeClock(T0)
    launches = Launches(clock, {"backup": timedelta(minutes=5)})
    fast_daemon(jobs, store, clock, launches, until=T0 + timedelta(days=1)).run()
    assert len(launches.times("backup")) == 1
    # The daemon is down for three days; it comes back at midday.
    clock.advance(timedelta(days=3))
    restart = clock.now
    again = Launches(clock, {"backup": timedelta(minutes=5)})
    fast_daemon(jobs, store, clock, again, until=restart + timedelta(hours=20)).run()
    times = again.times("backup")
    assert times[0] == restart  # three missed runs: one catch-up, right away
    assert len(times) == 2 and times[1].astimezone().hour == 2


def test_first_start_waits_for_the_schedule(tmp_path: Path) -> None:
    jobs = plan_jobs_for(
        tmp_path, 'backup = "daily at 02:00"\nwatch = "off"\nprune = "off"\ndrill = "off"'
    )
    clock = FakeClock(T0)
    launches = Launches(clock, {})
    fast_daemon(
        jobs, StateStore(tmp_path / "s"), clock, launches, until=T0 + timedelta(hours=1)
    ).run()
    assert launches.started == []


def test_shutdown_stops_running_jobs(tmp_path: Path) -> None:
    jobs = plan_jobs_for(
        tmp_path, 'backup = "off"\nwatch = "every 15m"\nprune = "off"\ndrill = "off"'
    )
    clock = FakeClock(T0)
    launches = Launches(clock, {"watch": timedelta(hours=5)})
    fast_daemon(
        jobs, StateStore(tmp_path / "s"), clock, launches, until=T0 + timedelta(minutes=30)
    ).run()
    assert [p.terminated for p in launches.processes["watch"]] == [True]
