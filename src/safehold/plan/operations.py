"""The plan's operations tables: `[schedule]` (when jobs run), `[alerts]` (who hears about a
failure), `[pings]` (dead-man URLs pinged by every job) and `[metrics]` (a Prometheus
textfile). Alert and ping URLs carry tokens, so the plan treats them as secrets."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from safehold.plan.fields import NAME, Duration, PlanPath, problem
from safehold.plan.redact import Redactor
from safehold.policy.schedule import EXAMPLES, Cron, ScheduleError, parse_schedule
from safehold.redaction import token_secrets

AFTER_BACKUP = "after backup"
JOB_NAMES = ("backup", "copy", "prune", "drill", "watch", "basebackup")
SEVERITIES = ("info", "warning", "error")
Severity = Literal["info", "warning", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


def _schedule_text(value: Any) -> str:
    try:
        parse_schedule(value)
    except ScheduleError as err:
        raise problem(f'a schedule like {EXAMPLES}, or "off"', hint=str(err)) from None
    return str(value)


def _copy_schedule_text(value: Any) -> str:
    if isinstance(value, str) and " ".join(value.lower().replace("-", " ").split()) in (
        AFTER_BACKUP,
    ):
        return AFTER_BACKUP
    try:
        parse_schedule(value)
    except ScheduleError as err:
        raise problem(
            f'"after backup", a schedule like {EXAMPLES}, or "off"', hint=str(err)
        ) from None
    return str(value)


ScheduleText = Annotated[
    str,
    BeforeValidator(_schedule_text),
    Field(description=f'a schedule like {EXAMPLES}, or "off"'),
]
CopyScheduleText = Annotated[
    str,
    BeforeValidator(_copy_schedule_text),
    Field(description='"after backup", a schedule like "daily at 04:00", or "off"'),
]


class ScheduleConfig(_Model):
    """When each job runs. Every job has a default; "off" turns one off."""

    backup: ScheduleText = "daily at 02:00"
    copy_: CopyScheduleText = Field(default=AFTER_BACKUP, alias="copy")
    prune: ScheduleText = "weekly"
    drill: ScheduleText = "monthly"
    drill_on_request: bool = Field(
        default=True,
        description="true or false: run a drill soon after `safehold schedule request-drill` "
        "(or `backup --schema-changed`)",
    )
    watch: ScheduleText = "every 15m"
    basebackup: ScheduleText = "weekly"  # only for sources with pitr = "wal"

    def cron(self, job: str) -> Cron | None:
        """The job's schedule, or None when it is off (or, for copy, runs after backup)."""
        text = self.text(job)
        if job == "copy" and text == AFTER_BACKUP:
            return None
        return parse_schedule(text)

    def text(self, job: str) -> str:
        """The job's schedule as written."""
        return str(getattr(self, _attribute(job)))

    @property
    def copy_after_backup(self) -> bool:
        return self.copy_ == AFTER_BACKUP


def _attribute(job: str) -> str:
    if job not in JOB_NAMES:
        raise ValueError(f"unknown job {job!r}")
    return "copy_" if job == "copy" else job


def _url(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value or not value.split("://", 1)[1]:
        raise problem(
            "an apprise URL like mailto://…, slack://…, ntfys://… or json://host/path",
            hint="see https://github.com/caronc/apprise/wiki for every service's URL",
        )
    return value


def _ping_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"https?://[^/\s]+", value):
        raise problem(
            "an http(s) URL like https://hc-ping.com/<uuid>",
            hint="healthchecks-style: /start, (nothing) and /fail are added; or put {event} "
            "in the URL where start, success or fail goes",
        )
    return value


AlertURL = Annotated[str, BeforeValidator(_url), Field(description="an apprise URL")]
PingURL = Annotated[
    str, BeforeValidator(_ping_url), Field(description="an http(s) URL like https://hc-ping.com/…")
]


class AlertChannel(_Model):
    name: Annotated[
        str,
        BeforeValidator(
            lambda v: v if isinstance(v, str) and NAME.fullmatch(v) else _bad_channel_name()
        ),
        Field(description="a channel name like ops-mail"),
    ]
    url: AlertURL
    severity: Severity = Field(default="warning", description="info, warning or error")

    def label(self) -> str:
        """The channel's name and kind, never its URL (which holds tokens)."""
        return f"{self.name} ({self.url.split('://', 1)[0]}://…)"


def _bad_channel_name() -> str:
    raise problem(
        "a channel name like ops-mail",
        hint="use lowercase letters, digits, _ and -, starting with a letter or digit",
    )


class AlertsConfig(_Model):
    """Where alerts go. A channel gets messages at its severity and above; a recovery or
    "resolved" message goes wherever the problem went."""

    channels: list[AlertChannel] = Field(
        default_factory=list, description="a list of [[alerts.channels]] tables"
    )
    reminder: Duration = Field(
        default=timedelta(hours=24), description="how often to repeat an open problem, like 24h"
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: dict[str, int] = {}
        for index, channel in enumerate(self.channels):
            if channel.name in seen:
                raise problem(
                    "a unique channel name",
                    found=f'"{channel.name}" (also the name of channels[{seen[channel.name]}])',
                    hint="give every channel its own name",
                    at=("channels", index, "name"),
                )
            seen[channel.name] = index
        return self


class PingsConfig(_Model):
    """Dead-man URLs, one per job: pinged at start, success and failure, so an outside
    service notices when the whole machine is gone."""

    backup: PingURL | None = None
    copy_: PingURL | None = Field(default=None, alias="copy")
    prune: PingURL | None = None
    drill: PingURL | None = None
    watch: PingURL | None = None
    basebackup: PingURL | None = None
    timeout: Duration = Field(default=timedelta(seconds=10), description="a duration like 10s")

    def url(self, job: str) -> str | None:
        value = getattr(self, _attribute(job))
        return value if isinstance(value, str) else None

    def urls(self) -> list[str]:
        return [url for job in JOB_NAMES if (url := self.url(job))]


class MetricsConfig(_Model):
    textfile: PlanPath | None = Field(
        default=None,
        description="a path like /var/lib/node_exporter/textfile_collector/safehold.prom",
    )

    @property
    def textfile_path(self) -> Path | None:
        return self.textfile


def describe_operations(plan: Any) -> list[str]:
    """Lines for `plan check`: when jobs run, where alerts go, which jobs ping (no URLs)."""
    from safehold.policy.duration import format_duration

    lines: list[str] = []
    schedule = plan.schedule
    if schedule is not None:
        pitr = any(getattr(source, "pitr", None) == "wal" for source in plan.sources)
        names = [job for job in JOB_NAMES if job != "basebackup" or pitr]
        jobs = ", ".join(f"{job} {schedule.text(job)}" for job in names)
        lines.append(f"schedule: {jobs}")
    for source in plan.sources:
        if source.rpo is not None:
            lines.append(f"  source {source.name}: RPO {format_duration(source.rpo)}")
    for destination in plan.destinations:
        if destination.max_lag is not None:
            lines.append(
                f"  destination {destination.name}: newest copy at most "
                f"{format_duration(destination.max_lag)} old"
            )
    alerts: AlertsConfig = plan.alerts
    for channel in alerts.channels:
        lines.append(f"alerts: {channel.label()} gets {channel.severity} and worse")
    pinged = [job for job in JOB_NAMES if plan.pings.url(job)]
    if pinged:
        lines.append("pings: " + ", ".join(pinged))
    return lines


def add_secret_url(redactor: Redactor, url: str) -> None:
    """Treat an alert or ping URL as a secret (the rule is `redaction.token_secrets`)."""
    for secret in token_secrets(url):
        redactor.add(secret)
