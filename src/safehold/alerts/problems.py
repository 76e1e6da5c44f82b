"""Open problems and how often they are told: one alert when a problem appears (or gets
worse, or its cause changes: wrong password, then database down), a reminder every
`reminder` while it stays, and one "resolved" (or, for a failed job, "recovered") message
when a later check finds it gone. A problem whose alert reached no channel is tried again at
the next check instead of being counted as told.

"Recovered" is said only by the job that recovered: a report names its `reporter` (the job
or command), and a `job:<name>` problem that some other check finds gone (the watch seeing
a newer passing drill) is "resolved", never "recovered" in another job's name; a job's
report never closes another job's problem.

Only problems whose check actually ran can be resolved: when a repository cannot be reached
its staleness was not measured, so a stale-backup problem stays open (the caller passes the
keys it `checked`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from safehold.alerts.notify import SEVERITY_RANK, Alert, Notifier, SendResult, age_words
from safehold.alerts.store import Document, StateStore, parse_time

DOCUMENT = "problems"
_VOLATILE = re.compile(r"\d+")  # PIDs, ports, sizes, times: not a different cause


def same_cause(old: str, new: str) -> bool:
    """Whether two causes are the same problem (numbers and case aside)."""
    return _VOLATILE.sub("#", old.strip().lower()) == _VOLATILE.sub("#", new.strip().lower())


class ProblemTracker:
    def __init__(self, store: StateStore, notifier: Notifier, reminder: timedelta) -> None:
        self.store = store
        self.notifier = notifier
        self.reminder = reminder

    def open_problems(self) -> Document:
        return dict(self.store.read(DOCUMENT))

    def report(
        self, problems: Iterable[Alert], checked: Iterable[str], reporter: str | None = None
    ) -> list[SendResult]:
        """Tell what needs telling about `problems` (all currently open problems among the
        `checked` keys); returns what was sent. `reporter`: the job or command reporting
        (`backup`, `drill`, ...), None for the watch."""
        now = self.notifier.clock()
        current = {problem.key: problem for problem in problems}
        checked_keys = set(checked) | set(current)
        if reporter is not None:  # a job closes its own problem only
            checked_keys = {
                key
                for key in checked_keys
                if not key.startswith("job:") or key == f"job:{reporter}"
            } | set(current)
        results: list[SendResult] = []
        memory = self.open_problems()
        changes: dict[str, Document | None] = {}  # None: resolved
        for key, problem in current.items():
            record = memory.get(key)
            outgoing = self._due(problem, record, now)
            sent = self.notifier.send(outgoing) if outgoing is not None else None
            if sent is not None:
                results.append(sent)
            changes[key] = self._remember(problem, record, now, sent)
        for key in sorted(set(memory) - set(current)):
            if key not in checked_keys:
                continue
            record = memory[key]
            changes[key] = None
            channels = record.get("channels") or []
            if channels:
                message = self._resolved(key, record, now, reporter)
                results.append(self.notifier.send(message, channels))

        def apply(document: Document) -> None:
            # Only the keys this report judged: a job and a watch reporting at the same
            # moment do not overwrite each other's problems.
            for key, value in changes.items():
                if value is None:
                    document.pop(key, None)
                else:
                    document[key] = value

        self.store.update(DOCUMENT, apply)
        return results

    def _due(self, problem: Alert, record: Document | None, now: datetime) -> Alert | None:
        if record is None:
            return problem
        last_sent = parse_time(record.get("last_sent"))
        worse = SEVERITY_RANK[problem.severity] > SEVERITY_RANK.get(record.get("severity", ""), 0)
        if last_sent is None or worse:
            return problem
        told = str(record.get("cause") or "")
        if problem.cause and told and not same_cause(told, problem.cause):
            return replace(
                problem,
                title=f"{problem.title}: new cause",
                details=(*problem.details, f"Before, the cause was: {told}"),
            )
        if now - last_sent >= self.reminder:
            since = parse_time(record.get("first_seen")) or now
            return replace(
                problem,
                kind="reminder",
                title=f"still: {problem.title}",
                details=(*problem.details, f"Open for {age_words(now - since)}."),
            )
        return None

    @staticmethod
    def _remember(
        problem: Alert, record: Document | None, now: datetime, sent: SendResult | None
    ) -> Document:
        remembered = dict(record or {})
        remembered.setdefault("first_seen", now.isoformat())
        remembered.update(severity=problem.severity, title=problem.title, what=problem.what)
        remembered["last_checked"] = now.isoformat()
        if problem.cause and not remembered.get("cause"):
            remembered["cause"] = problem.cause  # a first cause counts as told with the alert
        if sent is not None and sent.delivered_to:
            remembered["last_sent"] = now.isoformat()
            if problem.cause:
                remembered["cause"] = problem.cause  # the cause the channels last heard
            channels = set(remembered.get("channels") or []) | set(sent.delivered_to)
            remembered["channels"] = sorted(channels)
        return remembered

    @staticmethod
    def _resolved(key: str, record: Document, now: datetime, reporter: str | None) -> Alert:
        since = parse_time(record.get("first_seen")) or now
        job = key.startswith("job:") and key == f"job:{reporter}"
        title = str(record.get("title") or key)
        if job:
            opening = f"The {reporter} job succeeded again"
        elif key.startswith("job:"):
            opening = f"A later check found the {key[len('job:') :]} problem gone"
        else:
            opening = "The problem has cleared"
        return Alert(
            key=key,
            severity=record.get("severity", "error"),
            title=f"{'recovered' if job else 'resolved'}: {title}",
            what=f"{opening} after {age_words(now - since)}: {record.get('what') or title}",
            kind="recovery" if job else "resolved",
        )
