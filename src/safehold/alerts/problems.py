"""Open problems and how often they are told: one alert when a problem appears (or gets
worse), a reminder every `reminder` while it stays, and one "resolved" (or, for a failed
job, "recovered") message when a later check finds it gone. A problem whose alert reached
no channel is tried again at the next check instead of being counted as told.

Only problems whose check actually ran can be resolved: when a repository cannot be reached
its staleness was not measured, so a stale-backup problem stays open (the caller passes the
keys it `checked`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from safehold.alerts.notify import SEVERITY_RANK, Alert, Notifier, SendResult, age_words
from safehold.alerts.store import Document, StateStore, parse_time

DOCUMENT = "problems"


class ProblemTracker:
    def __init__(self, store: StateStore, notifier: Notifier, reminder: timedelta) -> None:
        self.store = store
        self.notifier = notifier
        self.reminder = reminder

    def open_problems(self) -> Document:
        return dict(self.store.read(DOCUMENT))

    def report(self, problems: Iterable[Alert], checked: Iterable[str]) -> list[SendResult]:
        """Tell what needs telling about `problems` (all currently open problems among the
        `checked` keys); returns what was sent."""
        now = self.notifier.clock()
        current = {problem.key: problem for problem in problems}
        checked_keys = set(checked) | set(current)
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
                results.append(self.notifier.send(self._resolved(key, record, now), channels))

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
        if sent is not None and sent.delivered_to:
            remembered["last_sent"] = now.isoformat()
            channels = set(remembered.get("channels") or []) | set(sent.delivered_to)
            remembered["channels"] = sorted(channels)
        return remembered

    @staticmethod
    def _resolved(key: str, record: Document, now: datetime) -> Alert:
        since = parse_time(record.get("first_seen")) or now
        job = key.startswith("job:")
        title = str(record.get("title") or key)
        return Alert(
            key=key,
            severity=record.get("severity", "error"),
            title=f"{'recovered' if job else 'resolved'}: {title}",
            what=(
                f"{'The job succeeded again' if job else 'The problem has cleared'} after "
                f"{age_words(now - since)}: {record.get('what') or title}"
            ),
            kind="recovery" if job else "resolved",
        )
