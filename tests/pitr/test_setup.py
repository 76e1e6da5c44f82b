"""`pitr setup`: the server's archiving settings checked, the exact statements printed (with
archive_timeout chosen from the RPO), and applied with --apply by a superuser."""

from __future__ import annotations

import json

from tests.pitr.conftest import PitrSite


def test_setup_checks_prints_and_applies(pitr_site: PitrSite) -> None:
    site = pitr_site
    result = site.cli("pitr", "setup", "--source", "db", "--mode", "sync", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["wal_level"]["ok"] and checks["archive_mode"]["ok"]
    assert checks["max_wal_senders"]["ok"]
    # the plan's RPO is 1m: half of it, so an idle-then-busy server never holds more
    assert checks["archive_timeout"] == {
        "name": "archive_timeout", "current": "0", "wanted": "30", "ok": False,
        "needs_restart": False,
    }  # fmt: skip
    assert not checks["archive_command"]["ok"]
    assert checks["archive_command"]["wanted"].endswith(" wal-push %p")
    assert "ALTER SYSTEM SET \"archive_timeout\" = '30'" in report["statements"]
    assert report["can_apply"] is True and report["problems"] == []
    assert report["archiver"]["failed_count"] == "0"

    text = site.cli("pitr", "setup", "--source", "db", "--mode", "sync")
    assert text.returncode == 3
    assert "FIX  archive_timeout = '0' (wanted: 30)" in text.stdout
    assert "ALTER SYSTEM SET \"archive_timeout\" = '30';" in text.stdout
    assert site.server.password not in text.stdout + text.stderr

    applied = site.cli("pitr", "setup", "--source", "db", "--mode", "sync", "--apply", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert json.loads(applied.stdout)["applied"] is True
    assert site.sql("SHOW archive_timeout", "postgres") == "30s"
    again = json.loads(site.cli("pitr", "setup", "--source", "db", "--mode", "sync",
                                "--json").stdout)  # fmt: skip
    assert again["ok"] is True and again["statements"] == []

    unknown = site.cli("pitr", "setup", "--source", "nope")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
