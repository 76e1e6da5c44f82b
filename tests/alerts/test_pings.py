"""Dead-man pings: healthchecks-style URLs get /start, success and /fail (with the error)."""

from __future__ import annotations

from pathlib import Path

from safehold.alerts.pings import Pinger, ping_target
from safehold.alerts.store import StateStore
from safehold.plan.operations import PingsConfig
from tests.ops_helpers import FakeClock
from tests.receivers import HttpReceiver, closed_port_url


def test_ping_targets() -> None:
    assert ping_target("https://hc-ping.com/abc/", "start") == "https://hc-ping.com/abc/start"
    assert ping_target("https://hc-ping.com/abc", "success") == "https://hc-ping.com/abc"
    assert ping_target("https://x.test/hook?e={event}", "fail") == "https://x.test/hook?e=fail"


def test_start_success_and_fail_reach_the_server(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    base = f"http://127.0.0.1:{http_receiver.port}/ping/uuid-1"
    pings = PingsConfig.model_validate({"backup": base})
    store = StateStore(tmp_path)
    pinger = Pinger(pings, clock=FakeClock(), store=store)
    assert pinger.ping("backup", "start") == ""
    assert pinger.ping("backup", "success") == ""
    assert pinger.ping("backup", "fail", "source db failed: disk full") == ""
    assert pinger.ping("watch", "start") is None  # no URL for watch: nothing sent
    got = [(r.method, r.path, r.body) for r in http_receiver.drain()]
    assert got == [
        ("POST", "/ping/uuid-1/start", b""),
        ("POST", "/ping/uuid-1", b""),
        ("POST", "/ping/uuid-1/fail", b"source db failed: disk full"),
    ]
    assert store.read("pings")["backup"]["last_ok"] is True


def test_an_unreachable_ping_service_is_recorded(tmp_path: Path) -> None:
    url = closed_port_url("http")
    store = StateStore(tmp_path)
    pinger = Pinger(PingsConfig.model_validate({"watch": url}), clock=FakeClock(), store=store)
    error = pinger.ping("watch", "success")
    assert error
    record = store.read("pings")["watch"]
    assert record["last_ok"] is False and record["last_error"] == error
