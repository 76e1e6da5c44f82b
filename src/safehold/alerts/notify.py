"""Send one alert to the plan's channels through apprise, and record every delivery.

A channel receives an alert when the alert's severity is at or above the channel's
`severity`. Test messages go to every channel. Recovery and "resolved" messages go to the
channels the problem went to, whatever their filter, so nobody is left believing a problem
still stands. Delivery outcomes (and apprise's reason for a failure, redacted) are stored in
the state folder's `alerts` document, which `safehold status` and `alerts list` read."""

from __future__ import annotations

import logging
import socket
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from safehold.alerts.store import Document, StateStore

if TYPE_CHECKING:
    from safehold.plan.operations import AlertChannel, Severity

Kind = Literal["problem", "reminder", "resolved", "recovery", "test"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
_LOG_KEEP = 100


@dataclass(frozen=True)
class Alert:
    """One message. `what` says what failed or happened, `why` the reason, `fix` what to do
    first; `key` names the problem (`job:backup`, `stale:db`) for rate limiting."""

    key: str
    severity: Severity
    title: str
    what: str
    why: str = ""
    fix: str = ""
    kind: Kind = "problem"
    details: tuple[str, ...] = ()
    # What caused the problem, when the alert knows (a job's error): an open problem whose
    # cause changes is told again (alerts/problems.py). Empty: the cause is not compared.
    cause: str = ""

    def body(self, host: str = "") -> str:
        lines = [self.what]
        if self.why:
            lines.append(f"Why: {self.why}")
        if self.fix:
            lines.append(f"Do this first: {self.fix}")
        lines.extend(self.details)
        if host:
            lines.append(f"(sent by safehold on {host})")
        return "\n".join(lines)


@dataclass
class Delivery:
    channel: str
    ok: bool
    at: datetime
    error: str = ""


@dataclass
class SendResult:
    alert: Alert
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def delivered_to(self) -> list[str]:
        return [d.channel for d in self.deliveries if d.ok]

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.ok]


Clock = Callable[[], datetime]
Redact = Callable[[str], str]


class Notifier:
    """Sends alerts to `channels`; records outcomes in `store` (when given)."""

    def __init__(
        self,
        channels: Iterable[AlertChannel],
        *,
        clock: Clock,
        redact: Redact = lambda text: text,
        store: StateStore | None = None,
        prefix: str = "",
    ) -> None:
        self.channels = list(channels)
        self.clock = clock
        self.redact = redact
        self.store = store
        self.prefix = prefix  # like "myapp-prod: ", in front of every title
        self.host = socket.gethostname()

    def chosen(self, alert: Alert, only: Iterable[str] | None = None) -> list[AlertChannel]:
        if alert.kind == "test":
            return list(self.channels)
        if only is not None:
            names = set(only)
            return [channel for channel in self.channels if channel.name in names]
        rank = SEVERITY_RANK[alert.severity]
        return [c for c in self.channels if rank >= SEVERITY_RANK[c.severity]]

    def send(self, alert: Alert, only: Iterable[str] | None = None) -> SendResult:
        """Deliver `alert` to its channels (or exactly those named in `only`); never raises
        for a delivery problem: each one is returned and recorded."""
        result = SendResult(alert)
        for channel in self.chosen(alert, only):
            ok, error = self._deliver(channel, alert)
            result.deliveries.append(Delivery(channel.name, ok, self.clock(), self.redact(error)))
        if self.store is not None and result.deliveries:
            self._record(result)
        return result

    def _deliver(self, channel: AlertChannel, alert: Alert) -> tuple[bool, str]:
        with warnings.catch_warnings():  # apprise imports the deprecated imghdr
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise  # loads only when an alert is actually sent

        kinds = {
            "error": apprise.NotifyType.FAILURE,
            "warning": apprise.NotifyType.WARNING,
            "info": apprise.NotifyType.INFO,
        }
        kind = kinds[alert.severity]
        if alert.kind in ("resolved", "recovery"):
            kind = apprise.NotifyType.SUCCESS
        title = self.redact(self.prefix + alert.title)
        body = self.redact(alert.body(self.host))
        with apprise.LogCapture(level=logging.WARNING) as log:  # type: ignore[no-untyped-call]
            sender = apprise.Apprise()
            if not sender.add(channel.url):
                scheme = channel.url.split("://", 1)[0]
                return False, f"apprise does not understand this {scheme}:// URL"
            try:
                delivered = bool(sender.notify(title=title, body=body, notify_type=kind))
            except Exception as err:  # a plugin bug must not take the job down with it
                return False, f"apprise failed: {type(err).__name__}"
            messages = [line for line in log.getvalue().splitlines() if line.strip()]
        if delivered:
            return True, ""
        reason = messages[-1].split(" - ", 2)[-1] if messages else "not delivered"
        return False, reason

    def _record(self, result: SendResult) -> None:
        assert self.store is not None
        alert = result.alert

        def change(document: Document) -> None:
            channels = document.setdefault("channels", {})
            log = document.setdefault("log", [])
            for delivery in result.deliveries:
                entry = channels.setdefault(delivery.channel, {})
                at = delivery.at.isoformat()
                prefix = "last_test" if alert.kind == "test" else "last"
                if delivery.ok:
                    entry[f"{prefix}_ok"] = at
                else:
                    entry[f"{prefix}_failed"] = at
                    entry[f"{prefix}_error"] = delivery.error
                entry[f"{prefix}_result"] = "delivered" if delivery.ok else "failed"
                log.append(
                    {
                        "at": at,
                        "channel": delivery.channel,
                        "key": alert.key,
                        "kind": alert.kind,
                        "severity": alert.severity,
                        "title": self.redact(alert.title),
                        "ok": delivery.ok,
                        "error": delivery.error,
                    }
                )
            del log[:-_LOG_KEEP]

        self.store.update("alerts", change)


def age_words(value: timedelta) -> str:
    """A duration rounded for people: 45s, 12m, 5h20m, 3d4h."""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
