"""Rate limiting: one alert per problem, a reminder per interval, retried when undelivered,
a "resolved" message when a checked problem is gone (and only then)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from safehold.alerts.notify import Alert, Notifier
from safehold.alerts.problems import ProblemTracker
from safehold.alerts.store import StateStore
from safehold.plan.operations import AlertChannel
from tests.ops_helpers import FakeClock
from tests.receivers import HttpReceiver

STALE = Alert("stale:db", "error", "source db is stale", "newest good backup 30h ago")
LAG = Alert("lag:offsite", "warning", "offsite lags", "newest copy 3d old")


def tracker(tmp_path: Path, receiver: HttpReceiver, clock: FakeClock) -> ProblemTracker:
    channels = [
        AlertChannel.model_validate({"name": "pager", "url": receiver.url("/pager"),
                                     "severity": "error"}),
        AlertChannel.model_validate({"name": "chat", "url": receiver.url("/chat")}),
    ]  # fmt: skip
    notifier = Notifier(channels, clock=clock, store=StateStore(tmp_path))
    return ProblemTracker(StateStore(tmp_path), notifier, reminder=timedelta(hours=6))


def titles(receiver: HttpReceiver) -> list[tuple[str, str]]:
    return sorted((r.path, r.json()["title"]) for r in receiver.drain())


def test_one_alert_then_reminder_then_resolved(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    clock = FakeClock()
    problems = tracker(tmp_path, http_receiver, clock)
    problems.report([STALE, LAG], checked=["stale:db", "lag:offsite"])
    assert titles(http_receiver) == [
        ("/chat", "offsite lags"),
        ("/chat", "source db is stale"),
        ("/pager", "source db is stale"),
    ]
    for _ in range(3):  # every 15 minutes for 45 minutes: quiet
        clock.advance(timedelta(minutes=15))
        assert problems.report([STALE, LAG], checked=["stale:db", "lag:offsite"]) == []
    assert titles(http_receiver) == []
    clock.advance(timedelta(hours=6))
    sent = problems.report([STALE], checked=["stale:db", "lag:offsite"])
    got = titles(http_receiver)
    assert ("/pager", "still: source db is stale") in got
    assert ("/chat", "resolved: offsite lags") in got
    assert ("/pager", "resolved: offsite lags") not in got  # it never went to the pager
    assert {s.alert.kind for s in sent} == {"reminder", "resolved"}
    clock.advance(timedelta(minutes=15))
    problems.report([], checked=["stale:db"])
    assert titles(http_receiver) == [
        ("/chat", "resolved: source db is stale"), ("/pager", "resolved: source db is stale"),
    ]  # fmt: skip
    assert problems.open_problems() == {}


def test_unchecked_problems_stay_open(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    clock = FakeClock()
    problems = tracker(tmp_path, http_receiver, clock)
    problems.report([STALE], checked=["stale:db"])
    http_receiver.drain()
    clock.advance(timedelta(minutes=15))
    assert problems.report([], checked=["reach:local"]) == []  # staleness was not measured
    assert "stale:db" in problems.open_problems()


def test_undelivered_alert_is_retried_and_escalation_is_sent_at_once(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    clock = FakeClock()
    problems = tracker(tmp_path, http_receiver, clock)
    http_receiver.status = 500
    first = problems.report([LAG], checked=["lag:offsite"])
    assert first[0].failed and not first[0].delivered_to
    http_receiver.drain()
    http_receiver.status = 200
    clock.advance(timedelta(minutes=15))
    again = problems.report([LAG], checked=["lag:offsite"])
    assert again[0].delivered_to == ["chat"]  # retried, not counted as told before
    http_receiver.drain()
    clock.advance(timedelta(minutes=15))
    worse = Alert("lag:offsite", "error", "offsite unreachable for days", "…")
    assert problems.report([worse], checked=["lag:offsite"])[0].delivered_to == ["pager", "chat"]


def test_a_new_cause_is_told_again_numbers_aside(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    clock = FakeClock()
    problems = tracker(tmp_path, http_receiver, clock)

    def failed(why: str) -> Alert:
        return Alert("job:backup", "error", "backup FAILED", "The backup failed.", why, cause=why)

    problems.report([failed("repository is locked by PID 4242")], ["job:backup"], "backup")
    assert titles(http_receiver) == [("/chat", "backup FAILED"), ("/pager", "backup FAILED")]
    clock.advance(timedelta(minutes=15))
    problems.report([failed("repository is locked by PID 977")], ["job:backup"], "backup")
    assert titles(http_receiver) == []  # another PID is not another cause
    clock.advance(timedelta(minutes=15))
    sent = problems.report([failed("database db is down")], ["job:backup"], "backup")
    assert [s.alert.title for s in sent] == ["backup FAILED: new cause"]
    assert "Before, the cause was: repository is locked by PID 4242" in sent[0].alert.body()
    http_receiver.drain()
    clock.advance(timedelta(minutes=15))
    assert problems.report([failed("database db is down")], ["job:backup"], "backup") == []


def test_recovered_only_from_the_job_itself(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    clock = FakeClock()
    problems = tracker(tmp_path, http_receiver, clock)
    drill = Alert("job:drill", "error", "drill FAILED", "The drill failed.", "check failed")
    backup = Alert("job:backup", "error", "backup FAILED", "The backup failed.", "disk full")
    problems.report([drill], ["job:drill"], "drill")
    problems.report([backup], ["job:backup"], "backup")
    http_receiver.drain()
    # a backup report that (wrongly) lists the drill's key closes only its own problem
    sent = problems.report([], ["job:backup", "job:drill"], "backup")
    assert [(s.alert.title, s.alert.kind) for s in sent] == [
        ("recovered: backup FAILED", "recovery")
    ]
    assert "The backup job succeeded again" in sent[0].alert.what
    assert set(problems.open_problems()) == {"job:drill"}
    # the watch, seeing a newer passing drill, says "resolved", not "recovered"
    sent = problems.report([], ["job:drill"])
    assert [(s.alert.title, s.alert.kind) for s in sent] == [("resolved: drill FAILED", "resolved")]
    assert "succeeded again" not in sent[0].alert.what
    assert problems.open_problems() == {}
