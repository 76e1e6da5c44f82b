"""Alerts delivered through apprise to real receivers on loopback: an HTTP server (json://,
form://) and an SMTP server (mailto://)."""

from __future__ import annotations

from pathlib import Path

from safehold.alerts.notify import Alert, Notifier
from safehold.alerts.store import StateStore
from safehold.plan.operations import AlertChannel, add_secret_url
from safehold.plan.redact import Redactor
from tests.ops_helpers import T0, FakeClock
from tests.receivers import HttpReceiver, SmtpReceiver, closed_port_url

FAILURE = Alert(
    key="job:backup",
    severity="error",
    title="backup FAILED",
    what="The scheduled backup of shop (prod) failed (exit code 3).",
    why="source db failed: pg_dump: connection refused",
    fix="check that PostgreSQL runs, then `safehold backup`",
)


def channel(name: str, url: str, severity: str = "warning") -> AlertChannel:
    return AlertChannel.model_validate({"name": name, "url": url, "severity": severity})


def test_json_webhook_gets_what_why_and_fix(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    store = StateStore(tmp_path / "state")
    notifier = Notifier(
        [channel("hook", http_receiver.url())], clock=FakeClock(), store=store,
        prefix="shop-prod: ",
    )  # fmt: skip
    result = notifier.send(FAILURE)
    assert result.delivered_to == ["hook"] and not result.failed
    request = http_receiver.next()
    doc = request.json()
    assert request.path == "/hooks/alerts"
    assert doc["title"] == "shop-prod: backup FAILED"
    assert doc["type"] == "failure"
    assert "failed (exit code 3)" in doc["message"]
    assert "Why: source db failed: pg_dump: connection refused" in doc["message"]
    assert "Do this first: check that PostgreSQL runs" in doc["message"]
    record = store.read("alerts")
    assert record["channels"]["hook"]["last_result"] == "delivered"
    assert record["channels"]["hook"]["last_ok"] == T0.isoformat()
    assert record["log"][-1]["key"] == "job:backup" and record["log"][-1]["ok"] is True


def test_mail_reaches_a_real_smtp_server(tmp_path: Path, smtp_receiver: SmtpReceiver) -> None:
    notifier = Notifier([channel("mail", smtp_receiver.url())], clock=FakeClock())
    result = notifier.send(FAILURE)
    assert result.delivered_to == ["mail"], result.failed
    mail = smtp_receiver.next()
    assert mail.rcpt_tos == ["ops@example.test"]
    assert "backup FAILED" in str(mail.message["Subject"])
    payload = mail.message.get_payload(decode=True)
    text = payload.decode() if isinstance(payload, bytes) else str(mail.message)
    assert "Do this first: check that PostgreSQL runs" in text


def test_severity_filter_and_test_messages(http_receiver: HttpReceiver) -> None:
    pager = channel("pager", http_receiver.url("/pager"), severity="error")
    chat = channel("chat", http_receiver.url("/chat", scheme="form"), severity="info")
    notifier = Notifier([pager, chat], clock=FakeClock())
    warning = Alert("drill", "warning", "drill overdue", "no drill for 40 days")
    assert notifier.send(warning).delivered_to == ["chat"]
    form = http_receiver.next().form()
    assert form["title"] == "drill overdue" and form["type"] == "warning"
    assert notifier.send(FAILURE).delivered_to == ["pager", "chat"]
    test = Alert("test", "info", "test alert", "a test", kind="test")
    assert sorted(notifier.send(test).delivered_to) == ["chat", "pager"]
    paths = sorted(r.path for r in http_receiver.drain())
    assert paths == ["/chat", "/chat", "/pager", "/pager"]


def test_failed_delivery_is_recorded_not_raised(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    store = StateStore(tmp_path / "state")
    token_url = closed_port_url() + "/T0KEN1234abcdXYZ5678"
    redactor = Redactor()
    add_secret_url(redactor, token_url)
    http_receiver.status = 500
    notifier = Notifier(
        [channel("dead", token_url), channel("refusing", http_receiver.url()),
         channel("bogus", "nosuchservice://abc")],
        clock=FakeClock(), store=store, redact=redactor,
    )  # fmt: skip
    result = notifier.send(FAILURE)
    assert result.delivered_to == []
    errors = {d.channel: d.error for d in result.failed}
    assert set(errors) == {"dead", "refusing", "bogus"}
    assert "does not understand" in errors["bogus"]
    assert all(errors.values())
    record = store.read("alerts")["channels"]
    assert record["dead"]["last_result"] == "failed" and record["dead"]["last_error"]
    assert "T0KEN1234abcdXYZ5678" not in str(store.read("alerts"))
