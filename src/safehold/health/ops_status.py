"""Scorecard items about operations for `safehold status`: is the backup job scheduled (and
did its last run work), are alerts configured, tested, and delivered."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

from safehold.alerts.notify import age_words
from safehold.alerts.store import StateStore, parse_time
from safehold.health.scorecard import Level, ScoreItem
from safehold.ops.daemon import daemon_alive
from safehold.ops.schedule_install import DOCUMENT, installed_problems
from safehold.ops.state import now_local, state_store
from safehold.plan.models import Plan

_SCHEDULED = "backups scheduled"
_ALERTS = "alerts configured and the last test delivered"


def schedule_items(
    plan: Plan, environ: Mapping[str, str] = os.environ, now: datetime | None = None
) -> list[ScoreItem]:
    now = now or now_local()
    store = state_store(plan, environ)
    items = [_scheduled(plan, store, environ, now)]
    for name, record in sorted(store.read("jobs").items()):
        if isinstance(record, dict) and record.get("status") == "failed":
            items.append(
                ScoreItem(
                    f"job-failed:{name}",
                    Level.FAIL,
                    f"the last scheduled {name} job succeeded",
                    f"it failed at {record.get('finished', '?')}: {record.get('error') or '?'}",
                    f"run `safehold {name if name != 'prune' else 'forget --prune'}` by hand "
                    "to see the whole error",
                )
            )
    return items


def _scheduled(
    plan: Plan, store: StateStore, environ: Mapping[str, str], now: datetime
) -> ScoreItem:
    key = "schedule"
    if plan.schedule is None:
        return ScoreItem(
            key,
            Level.FAIL,
            _SCHEDULED,
            "the plan has no [schedule] table",
            'add [schedule] with backup = "daily at 02:00", then `safehold schedule install`',
        )
    cron = plan.schedule.cron("backup")
    if cron is None:
        return ScoreItem(
            key,
            Level.WARN,
            _SCHEDULED,
            "the backup job is off in [schedule]",
            'set backup = "daily at 02:00" in [schedule]',
        )
    when = f"{cron.text}, next {cron.next_after(now).strftime('%Y-%m-%d %H:%M')}"
    if daemon_alive(store, now):
        return ScoreItem(key, Level.PASS, _SCHEDULED, f"`safehold run` is running ({when})")
    record = store.read(DOCUMENT)
    if not record.get("kind"):
        return ScoreItem(
            key,
            Level.FAIL,
            _SCHEDULED,
            "nothing installed runs the backups",
            "`safehold schedule install` (or keep `safehold run` running)",
        )
    if "backup" not in (record.get("jobs") or {}):
        return ScoreItem(
            key,
            Level.FAIL,
            _SCHEDULED,
            f"the installed {record['kind']} schedule has no backup job",
            "`safehold schedule install`",
        )
    problems = installed_problems(plan, store, environ)
    if problems:
        return ScoreItem(
            key, Level.FAIL, _SCHEDULED, "; ".join(problems), "`safehold schedule install`"
        )
    if record["kind"] == "systemd" and not record.get("enabled"):
        return ScoreItem(
            key,
            Level.WARN,
            _SCHEDULED,
            f"systemd units written to {record.get('where')} but not enabled",
            "copy them to /etc/systemd/system and `systemctl enable --now` the timers",
        )
    return ScoreItem(key, Level.PASS, _SCHEDULED, f"{record['kind']}: {when}")


def alert_items(
    plan: Plan, environ: Mapping[str, str] = os.environ, now: datetime | None = None
) -> list[ScoreItem]:
    now = now or now_local()
    store = state_store(plan, environ)
    if not plan.alerts.channels:
        return [
            ScoreItem(
                "alerts",
                Level.WARN,
                _ALERTS,
                "the plan has no alert channels",
                "add [[alerts.channels]] with an apprise url (mailto://, slack://, "
                "ntfy://…), then `safehold alerts test`",
            )
        ]
    records = store.read("alerts").get("channels", {})
    items: list[ScoreItem] = []
    tested: list[str] = []
    for channel in plan.alerts.channels:
        record = records.get(channel.name, {})
        key = f"alerts:{channel.name}"
        last_ok = parse_time(record.get("last_ok"))
        last_failed = parse_time(record.get("last_failed"))
        if last_failed is not None and (last_ok is None or last_failed > last_ok):
            items.append(
                ScoreItem(
                    key,
                    Level.FAIL,
                    f"alerts to {channel.label()} are delivered",
                    f"the last alert ({age_words(now - last_failed)} ago) was NOT "
                    f"delivered: {record.get('last_error', '?')}",
                    "fix the channel's URL or the network, then "
                    f"`safehold alerts test --channel {channel.name}`",
                )
            )
            continue
        result = record.get("last_test_result")
        if result is None:
            items.append(
                ScoreItem(
                    key,
                    Level.WARN,
                    _ALERTS,
                    f"{channel.label()} was never tested",
                    f"`safehold alerts test --channel {channel.name}`",
                )
            )
        elif result == "failed":
            items.append(
                ScoreItem(
                    key,
                    Level.FAIL,
                    _ALERTS,
                    f"the last test to {channel.label()} was NOT delivered: "
                    f"{record.get('last_test_error', '?')}",
                    "fix the channel's URL or the network, then "
                    f"`safehold alerts test --channel {channel.name}`",
                )
            )
        else:
            at = parse_time(record.get("last_test_ok"))
            ago = f" {age_words(now - at)} ago" if at else ""
            tested.append(f"{channel.name} tested{ago}")
    pings = store.read("pings")
    for job, record in sorted(pings.items()):
        if isinstance(record, dict) and record.get("last_ok") is False:
            items.append(
                ScoreItem(
                    f"pings:{job}",
                    Level.WARN,
                    f"dead-man pings of {job} arrive",
                    f"the last ping was NOT delivered: {record.get('last_error')}",
                    f"check [pings] {job} and the network",
                )
            )
    if tested and not any(item.key.startswith("alerts:") for item in items):
        items.insert(0, ScoreItem("alerts", Level.PASS, _ALERTS, ", ".join(tested)))
    elif tested:
        items.insert(0, ScoreItem("alerts", Level.PASS, "alert channels tested", ", ".join(tested)))
    return items
