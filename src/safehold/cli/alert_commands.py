"""`safehold alerts test|list`, `safehold watch`, `safehold metrics`: telling people, and
noticing what did not happen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode, UsageError


@click.group("alerts")
def alerts() -> None:
    """Alert channels: send a test message, list channels and deliveries."""


@alerts.command("test")
@click.option("--channel", "names", multiple=True, help="Only this channel (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
@pass_state
def alerts_test(state: CliState, names: tuple[str, ...], as_json: bool) -> int:
    """Send a test message to every channel and record whether it was delivered."""
    from safehold.alerts.notify import Alert
    from safehold.ops.alerting import notifier_for
    from safehold.ops.state import state_store

    plan = state.plan()
    if not plan.alerts.channels:
        raise UsageError(
            "the plan has no alert channels",
            hint='add [[alerts.channels]] with name = "ops" and url = "mailto://…" (any apprise '
            "URL), then run `safehold alerts test`",
        )
    known = {channel.name for channel in plan.alerts.channels}
    for name in names:
        if name not in known:
            raise UsageError(
                f"no alert channel named {name!r}", hint="channels: " + ", ".join(sorted(known))
            )
    notifier = notifier_for(plan, state_store(plan, os.environ))
    alert = Alert(
        key="test",
        severity="info",
        kind="test",
        title="test alert",
        what=f"A test alert from safehold for {plan.app} ({plan.env}). If you can read this, "
        "this channel reaches you when a backup, copy, prune or drill fails or goes stale.",
        fix="nothing: this is only a test",
    )
    chosen = [c for c in plan.alerts.channels if not names or c.name in names]
    result = notifier.send(alert, only=[c.name for c in chosen])
    labels = {channel.name: channel.label() for channel in plan.alerts.channels}
    if as_json:
        state.emit_json(
            [
                {"channel": d.channel, "delivered": d.ok, "error": d.error, "at": d.at.isoformat()}
                for d in result.deliveries
            ]
        )
    else:
        for delivery in result.deliveries:
            if delivery.ok:
                state.say(f"delivered  {labels[delivery.channel]}")
            else:
                state.say(f"FAILED     {labels[delivery.channel]}: {delivery.error}")
    if result.failed:
        first = result.failed[0]
        raise UsageError(
            f"{len(result.failed)} of {len(result.deliveries)} test alert(s) were not "
            f"delivered (first: {first.channel}: {first.error})",
            hint="check the channel's URL and the network; the failure is recorded for "
            "`safehold status`",
        )
    return ExitCode.OK


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def alerts_list(state: CliState, as_json: bool) -> None:
    """List the alert channels, their last test and delivery, and open problems."""
    from safehold.ops.state import state_store

    plan = state.plan()
    store = state_store(plan, os.environ)
    records = store.read("alerts").get("channels", {})
    problems = store.read("problems")
    rows: list[dict[str, Any]] = []
    for channel in plan.alerts.channels:
        record = records.get(channel.name, {})
        rows.append(
            {
                "name": channel.name,
                "kind": channel.url.split("://", 1)[0],
                "severity": channel.severity,
                "last_test": record.get("last_test_result"),
                "last_test_ok": record.get("last_test_ok"),
                "last_test_error": record.get("last_test_error"),
                "last_alert": record.get("last_result"),
                "last_alert_ok": record.get("last_ok"),
                "last_alert_failed": record.get("last_failed"),
                "last_alert_error": record.get("last_error"),
            }
        )
    open_problems = [
        {"key": key, **{k: v for k, v in value.items() if k != "what"}}
        for key, value in sorted(problems.items())
    ]
    if as_json:
        state.emit_json({"channels": rows, "open_problems": open_problems})
        return
    if not rows:
        state.say("no alert channels: add [[alerts.channels]] to the plan")
    for row in rows:
        tested = "never tested"
        if row["last_test"] == "delivered":
            tested = f"test delivered {row['last_test_ok']}"
        elif row["last_test"] == "failed":
            tested = f"test FAILED: {row['last_test_error']}"
        state.say(f"{row['name']} ({row['kind']}://…) severity >= {row['severity']}: {tested}")
        if row["last_alert"] == "failed":
            state.say(f"  last alert NOT delivered: {row['last_alert_error']}")
    for problem in open_problems:
        state.say(
            f"open: {problem['key']}: {problem.get('title', '')} (since "
            f"{problem.get('first_seen', '?')})"
        )


@click.command("watch")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--no-alerts", is_flag=True, help="Only report; send no alert.")
@pass_state
def watch(state: CliState, as_json: bool, no_alerts: bool) -> int:
    """Check that backups, copies and drills are fresh, reading the repositories.

    Alerts on a source with no good backup within its RPO, a destination whose newest
    snapshot is older than its max_lag, a drill that is overdue or failed, and a repository
    that cannot be reached; repeats at most every [alerts] reminder, and says "resolved" when
    a problem clears. Exit 0 when nothing is wrong, 2 when a problem is open."""
    from safehold.health.observe import destination_opener
    from safehold.health.watch import run_watch
    from safehold.ops.alerting import tracker_for
    from safehold.ops.state import now_local, state_store

    plan = state.plan()
    store = state_store(plan, os.environ)
    tracker = None if no_alerts else tracker_for(plan, store)
    report = run_watch(
        plan, now=now_local(), open_repo=destination_opener(plan, os.environ), tracker=tracker
    )
    _write_textfile(plan, report.metrics_text)
    if as_json:
        state.emit_json(report.to_json())
    else:
        for finding in report.findings:
            mark = "ok     " if finding.ok else f"{finding.severity.upper():7s}"
            state.say(f"{mark} {finding.title}: {finding.detail}")
            if not finding.ok and finding.fix:
                state.say(f"        fix: {finding.fix}")
        for sent in report.sent:
            for delivery in sent.deliveries:
                verb = "sent" if delivery.ok else "NOT delivered"
                note = f" ({delivery.error})" if delivery.error else ""
                state.say(f"alert {verb} to {delivery.channel}: {sent.alert.title}{note}")
    for sent in report.sent:
        for delivery in sent.failed:
            state.warn(f"alert to {delivery.channel} was not delivered: {delivery.error}")
    return 2 if report.problems else ExitCode.OK


@click.command("metrics")
@click.option("--json", "as_json", is_flag=True, help="Print the samples as JSON.")
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False),
    help="Also write them to this Prometheus textfile (atomically).",
)
@pass_state
def metrics(state: CliState, as_json: bool, write_to: str | None) -> None:
    """Print Prometheus metrics: last good backup per source, job results, snapshot and
    repository sizes, drill duration and result, measured RPO and RTO."""
    from safehold.health.metrics import collect_metrics, render_json, render_text, write_textfile
    from safehold.health.observe import destination_opener
    from safehold.ops.state import now_local, state_store

    plan = state.plan()
    samples = collect_metrics(
        plan, now_local(), destination_opener(plan, os.environ), state_store(plan, os.environ)
    )
    text = render_text(samples)
    if write_to:
        write_textfile(Path(write_to), text)
    else:
        _write_textfile(plan, text)
    if as_json:
        state.emit_json(render_json(samples))
    else:
        click.echo(text, nl=False)


def _write_textfile(plan: Any, text: str) -> None:
    from safehold.health.metrics import write_textfile

    path = plan.metrics.textfile_path
    if path is not None and text:
        write_textfile(Path(path), text)


COMMANDS: list[click.Command] = [alerts, watch, metrics]
