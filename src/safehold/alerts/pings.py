"""Dead-man pings, healthchecks.io style: a job pings `<url>/start` when it starts, `<url>`
when it succeeds and `<url>/fail` when it fails (with the error as the request body). An
outside service that stops hearing the pings notices what no local alert can: the machine
is gone. A URL with `{event}` in it gets start, success or fail there instead.

A ping that cannot be delivered is recorded (the `pings` document of the state folder) and
never changes the job's result."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from safehold.alerts.store import Document, StateStore

if TYPE_CHECKING:
    from safehold.plan.operations import PingsConfig

Event = Literal["start", "success", "fail"]
_SUFFIX: dict[str, str] = {"start": "/start", "success": "", "fail": "/fail"}
_MAX_BODY = 10_000


def ping_target(url: str, event: Event) -> str:
    if "{event}" in url:
        return url.replace("{event}", event)
    return url.rstrip("/") + _SUFFIX[event]


def send_ping(url: str, event: Event, body: str = "", timeout: float = 10.0) -> str:
    """POST to the ping URL for `event`; returns "" when delivered, else the reason."""
    request = urllib.request.Request(
        ping_target(url, event),
        data=body.encode("utf-8")[:_MAX_BODY],
        method="POST",
        headers={"User-Agent": "safehold", "Content-Type": "text/plain; charset=utf-8"},
    )
    error = ""
    for _attempt in range(2):  # one retry: a ping is small, a blip should not lose it
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1024)
            return ""
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            error = str(reason) or type(err).__name__
    return error


class Pinger:
    def __init__(
        self,
        pings: PingsConfig,
        *,
        clock: Callable[[], datetime],
        redact: Callable[[str], str] = lambda text: text,
        store: StateStore | None = None,
    ) -> None:
        self.pings = pings
        self.clock = clock
        self.redact = redact
        self.store = store

    def ping(self, job: str, event: Event, body: str = "") -> str | None:
        """Ping the job's URL, if it has one; returns None (no URL), "" (delivered) or the
        reason it was not delivered (redacted)."""
        url = self.pings.url(job)
        if url is None:
            return None
        error = self.redact(
            send_ping(url, event, self.redact(body), self.pings.timeout.total_seconds())
        )
        if self.store is not None:
            at = self.clock().isoformat()

            def change(document: Document) -> None:
                entry = document.setdefault(job, {})
                entry.update(last_event=event, last_at=at, last_ok=not error)
                if error:
                    entry.update(last_error=error, last_failed=at)

            self.store.update("pings", change)
        return error
