"""The plan's [schedule], [alerts], [pings] and [metrics] tables, per-source rpo and
per-destination max_lag: defaults, one-line errors, and alert/ping URLs kept secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from safehold.plan import describe_plan
from tests.plan.helpers import HEAD, MINIMAL, SOURCE, ErrorOf, LoadText


def test_defaults_when_the_tables_are_empty(load_text: LoadText) -> None:
    plan = load_text(MINIMAL + "[schedule]\n")
    assert plan.schedule is not None
    jobs = ("backup", "copy", "prune", "drill", "watch")
    assert {job: plan.schedule.text(job) for job in jobs} == {
        "backup": "daily at 02:00",
        "copy": "after backup",
        "prune": "weekly",
        "drill": "monthly",
        "watch": "every 15m",
    }
    assert plan.schedule.copy_after_backup and plan.schedule.cron("copy") is None
    assert plan.alerts.channels == [] and plan.alerts.reminder == timedelta(hours=24)
    assert plan.pings.urls() == [] and plan.metrics.textfile is None
    assert load_text(MINIMAL).schedule is None


def test_full_tables(load_text: LoadText, tmp_path: Path) -> None:
    text = (
        HEAD
        + SOURCE
        + 'rpo = "1h"\n'
        + '[[destinations]]\nname = "local"\nrepository = "backups"\nmax_lag = "2d"\n'
        + '[schedule]\nbackup = "every 6h"\ncopy = "after-backup"\nprune = "off"\n'
        + 'drill = "0 4 1 * *"\n'
        + '[alerts]\nreminder = "6h"\n'
        + '[[alerts.channels]]\nname = "pager"\nurl = "ntfys://ntfy.sh/${NTFY_TOPIC}"\n'
        + 'severity = "error"\n'
        + '[pings]\nbackup = "https://hc-ping.com/${HC_UUID}"\n'
        + '[metrics]\ntextfile = "metrics/safehold.prom"\n'
    )
    environ = {"NTFY_TOPIC": "backups-Zq81xK2p", "HC_UUID": "5f1c2d9e-0a7b-4c3e-9d11-2b6f8e4a7c90"}
    plan = load_text(text, environ)
    assert plan.sources[0].rpo == timedelta(hours=1)
    assert plan.destinations[0].max_lag == timedelta(days=2)
    assert plan.schedule is not None and plan.schedule.cron("prune") is None
    assert plan.schedule.cron("backup").expression == "0 */6 * * *"  # type: ignore[union-attr]
    assert plan.alerts.channels[0].severity == "error"
    assert plan.alerts.reminder == timedelta(hours=6)
    assert plan.metrics.textfile == tmp_path / "metrics" / "safehold.prom"
    described = "\n".join(describe_plan(plan))
    assert "schedule: backup every 6h, copy after backup, prune off" in described
    assert "alerts: pager (ntfys://…) gets error and worse" in described
    assert "pings: backup" in described
    redact = plan.redactor()
    for secret in environ.values():
        assert secret not in described
        assert secret not in redact(f"error: {secret}")
    assert redact("delivery to ntfys://ntfy.sh/backups-Zq81xK2p failed") == (
        "delivery to ntfys://*** failed"
    )


def test_errors_are_one_line(error_of: ErrorOf) -> None:
    cases = {
        '[schedule]\nbackup = "nightly"\n': "safehold.toml: schedule.backup: expected a schedule",
        '[schedule]\nwatch = "every 7m"\n': "every N minutes with N dividing 60",
        '[schedule]\ncopy = "whenever"\n': 'schedule.copy: expected "after backup", a schedule',
        '[schedule]\nbackups = "daily"\n': "schedule.backups",
        '[[alerts.channels]]\nname = "a"\nurl = "slack"\n': "alerts.channels[0].url: expected "
        "an apprise URL",
        '[[alerts.channels]]\nname = "a"\nurl = "json://x"\nseverity = "critical"\n':
            "alerts.channels[0].severity: expected info, warning or error",
        '[pings]\nbackup = "hc-ping.com/abc"\n': "pings.backup: expected an http(s) URL",
        '[alerts]\nreminder = "0s"\n': "alerts.reminder: expected a duration longer than 0s",
    }  # fmt: skip
    for extra, expected in cases.items():
        err = error_of(MINIMAL + extra)
        assert expected in f"{err.message} {err.hint}", (extra, err.message)
        assert "\n" not in err.message and err.hint


def test_source_rpo_must_be_a_duration(error_of: ErrorOf) -> None:
    err = error_of(HEAD + SOURCE + 'rpo = "soon"\n[[destinations]]\nname = "l"\nrepository = "b"\n')
    assert err.message.startswith("safehold.toml: sources[0].rpo: expected a duration like")
