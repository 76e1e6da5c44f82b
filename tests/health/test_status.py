"""The scorecard items, each from a plan and what the destinations hold (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from safehold.backends.memory import MemoryBackend
from safehold.drills.record import DrillRecord
from safehold.drills.runbook import build_runbook, to_markdown
from safehold.health.observe import DestinationView, Observation
from safehold.health.scorecard import Level, worst
from safehold.health.status import (
    backup_items,
    copies_items,
    drill_items,
    key_item,
    offsite_login_item,
    reachable_items,
    retention_item,
    runbook_item,
)
from safehold.plan.loader import parse_plan
from safehold.plan.models import LocalDestination, Plan
from safehold.repo.gotypes import GoTime
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _plan(tmp_path: Path, extra: str = "", destinations: str | None = None) -> Plan:
    (tmp_path / "app.db").touch()
    destinations = destinations or '[[destinations]]\nname = "local"\nrepository = "backups"\n'
    text = f"""
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "1h"
[[sources]]
name = "db"
type = "sqlite"
path = "app.db"
{destinations}
{extra}
"""
    (tmp_path / "safehold.toml").write_text(text)
    return parse_plan(text, file=tmp_path / "safehold.toml", environ={})


def _snapshot(when: datetime, sources: dict[str, Any], ident: str = "a" * 64) -> Snapshot:
    return Snapshot(
        time=GoTime(int(when.timestamp() * 1e9)), tree="t" * 64, paths=["/db"],
        safehold={"app": "shop", "env": "prod", "complete": True, "sources": sources,
                  "name": "shop-prod-x"},
        id=ident,
    )  # fmt: skip


def _view(destination: LocalDestination, snapshots: list[Snapshot]) -> DestinationView:
    """A reachable destination holding `snapshots` (a real, empty in-memory repository)."""
    repo = Repository.init(MemoryBackend(), b"pw", kdf=KdfParams(1024, 8, 1))
    return DestinationView(destination, repo=repo, snapshots=snapshots)


def _seen(plan: Plan, *views: DestinationView, drill: DrillRecord | None = None) -> Observation:
    return Observation(plan, NOW, list(views), drill=drill)


def _drill(when: datetime, passed: bool = True, rto: float = 60.0) -> DrillRecord:
    return DrillRecord(
        started=when, finished=when + timedelta(seconds=rto), passed=passed,
        snapshot_id="a" * 64, snapshot_name="shop-prod-x", snapshot_time=when,
        app="shop", env="prod", destination="local", host="h",
        reasons=[] if passed else ["check failed: smoke: exit code 1"],
        rto_target_s=3600, rto_measured_s=rto, record_id="d" * 64,
    )  # fmt: skip


def test_backup_freshness_against_the_rpo(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    fresh = _view(plan.destinations[0], [_snapshot(NOW - timedelta(hours=3), {"db": {}})])
    [item] = backup_items(plan, _seen(plan, fresh), NOW)
    assert item.level is Level.PASS and "3h00m ago" in item.detail
    stale = _view(plan.destinations[0], [_snapshot(NOW - timedelta(days=2), {"db": {}})])
    [item] = backup_items(plan, _seen(plan, stale), NOW)
    assert item.level is Level.FAIL and "safehold backup" in item.fix
    failed = _view(
        plan.destinations[0], [_snapshot(NOW - timedelta(hours=1), {"db": {"failed": "x"}})]
    )
    [item] = backup_items(plan, _seen(plan, failed), NOW)
    assert item.level is Level.FAIL and item.detail == "no successful backup at all"


def test_copies_offsite_credentials_and_lock(tmp_path: Path) -> None:
    single = _plan(tmp_path)
    items = {i.key: i for i in copies_items(single, _seen(single))}
    assert items["copies:count"].level is Level.FAIL
    assert items["copies:offsite"].level is Level.FAIL
    assert items["copies:locked"].level is Level.WARN

    same_password = _plan(tmp_path, destinations="""
[[destinations]]
name = "local"
repository = "backups"
[[destinations]]
name = "offsite"
type = "sftp"
url = "sftp:backup@host:/srv/shop"
""")  # fmt: skip
    items = {i.key: i for i in copies_items(same_password, _seen(same_password))}
    assert items["copies:count"].level is Level.PASS
    assert items["copies:offsite"].level is Level.WARN

    locked = _plan(tmp_path, destinations="""
[[destinations]]
name = "local"
repository = "backups"
[[destinations]]
name = "s3"
type = "s3"
url = "s3:https://s3.example.com/bucket"
password_env = "OFFSITE_PASSWORD"
object_lock_days = 30
""")  # fmt: skip
    newest = _snapshot(NOW, {"db": {}})
    views = [_view(locked.destinations[0], [newest]), _view(locked.destinations[1], [])]
    items = {i.key: i for i in copies_items(locked, _seen(locked, *views))}
    assert items["copies:offsite"].level is Level.PASS
    assert items["copies:locked"].level is Level.PASS
    assert items["copies:current:s3"].level is Level.WARN
    assert "safehold copy --to s3" in items["copies:current:s3"].fix
    views[1].snapshots.append(newest)
    items = {i.key: i for i in copies_items(locked, _seen(locked, *views))}
    assert items["copies:current:s3"].level is Level.PASS


def test_drills_recent_passed_and_within_rto(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    destination = plan.destinations[0]
    [never] = drill_items(plan, _seen(plan, _view(destination, [])), NOW)
    assert never.level is Level.FAIL and never.fix == "run `safehold drill`"
    good = drill_items(plan, _seen(plan, drill=_drill(NOW - timedelta(days=3))), NOW)
    assert [i.level for i in good] == [Level.PASS, Level.PASS]
    old = drill_items(plan, _seen(plan, drill=_drill(NOW - timedelta(days=40))), NOW)
    assert old[0].level is Level.FAIL
    failed = drill_items(plan, _seen(plan, drill=_drill(NOW, passed=False)), NOW)
    assert failed[0].level is Level.FAIL and "smoke" in failed[0].detail
    slow = drill_items(plan, _seen(plan, drill=_drill(NOW, rto=7200)), NOW)
    assert slow[1].level is Level.FAIL and "2h00m" in slow[1].detail


def test_runbook_freshness_follows_plan_and_drill(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    runbook = tmp_path / "RUNBOOK.md"
    assert runbook_item(plan, _seen(plan), runbook).level is Level.WARN
    drill = _drill(NOW)
    runbook.write_text(to_markdown(build_runbook(plan, drill, NOW), plan, drill))
    assert runbook_item(plan, _seen(plan, drill=drill), runbook).level is Level.PASS
    newer = _drill(NOW + timedelta(hours=1))
    newer.record_id = "e" * 64
    assert "newer drill" in runbook_item(plan, _seen(plan, drill=newer), runbook).detail
    changed = _plan(tmp_path, extra='[owners]\nrestore_approvers = ["alice"]')
    assert "plan changed" in runbook_item(changed, _seen(changed), runbook).detail


def test_key_apart_and_retention(tmp_path: Path) -> None:
    beside = _plan(tmp_path, destinations="""
[[destinations]]
name = "local"
repository = "backups/repo"
password_file = "backups/password.txt"
""")  # fmt: skip
    item = key_item(beside)
    assert item.level is Level.FAIL and "password_command" in item.fix
    assert key_item(_plan(tmp_path)).level is Level.PASS

    assert retention_item(_plan(tmp_path)).level is Level.PASS  # the default: 3 months
    short = retention_item(_plan(tmp_path, extra="[retention]\nkeep_daily = 7"))
    assert short.level is Level.FAIL and "7 days" in short.detail
    last_only = retention_item(_plan(tmp_path, extra="[retention]\nkeep_last = 10"))
    assert last_only.level is Level.WARN


def test_worst_level_decides_the_exit_code(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    items = [key_item(plan), retention_item(plan)]
    assert worst(items) is Level.PASS and worst(items).exit_code == 0
    items.append(runbook_item(plan, _seen(plan), tmp_path / "missing.md"))
    assert worst(items).exit_code == 1
    items.extend(drill_items(plan, _seen(plan), NOW))
    assert worst(items).exit_code == 2


def test_unreachable_destinations_and_unreadable_drill_records_fail(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    down = DestinationView(plan.destinations[0], error="connection refused")
    seen = Observation(plan, NOW, [down], drill_error="safehold/drills/ab is corrupt")
    items = {i.key: i for i in reachable_items(seen)}
    assert items["reachable:local"].level is Level.FAIL
    assert items["reachable:local"].detail == "connection refused"
    assert items["drill:records"].level is Level.FAIL
    assert reachable_items(_seen(plan, _view(plan.destinations[0], []))) == []


# ----- secrets: backed up, key kept apart, last drill decrypted them ---------------------------


def _secrets_plan(tmp_path: Path) -> Plan:
    import pyrage

    recipient = pyrage.x25519.Identity.generate().to_public()
    (tmp_path / "master.key").write_text("k")
    return _plan(tmp_path, extra=f"""
[[sources]]
name = "keys"
type = "secrets"
files = ["master.key"]
recipients = ["{recipient}"]
""")  # fmt: skip


def _decrypting_drill(when: datetime, decrypted: bool) -> DrillRecord:
    from safehold.drills.record import CheckResult

    record = _drill(when)
    name = "decrypted and verified" if decrypted else "present and encrypted to the recipients"
    record.checks.append(
        CheckResult(f"secrets of keys {name}", "secrets", True, "", warning=not decrypted)
    )
    return record


def test_secrets_item_levels(tmp_path: Path) -> None:
    from safehold.health.status import secrets_items

    plain = _plan(tmp_path)
    assert secrets_items(plain, _seen(plain), NOW, {}) == []
    (tmp_path / ".env").write_text("API_KEY=x\n")
    [item] = secrets_items(plain, _seen(plain), NOW, {})
    assert item.level is Level.WARN and 'type = "secrets"' in item.fix

    plan = _secrets_plan(tmp_path)
    fresh = _view(plan.destinations[0], [_snapshot(NOW - timedelta(hours=2), {"keys": {}})])
    [item] = secrets_items(plan, _seen(plan), NOW, {})
    assert item.level is Level.FAIL and "no successful backup" in item.detail
    stale = _view(plan.destinations[0], [_snapshot(NOW - timedelta(days=3), {"keys": {}})])
    [item] = secrets_items(plan, _seen(plan, stale), NOW, {})
    assert item.level is Level.FAIL and "older than the RPO" in item.detail

    [item] = secrets_items(plan, _seen(plan, fresh, drill=_decrypting_drill(NOW, False)), NOW, {})
    assert item.level is Level.WARN and "did not decrypt" in item.detail
    assert "--identity" in item.fix
    seen = _seen(plan, fresh, drill=_decrypting_drill(NOW - timedelta(hours=1), True))
    [item] = secrets_items(plan, seen, NOW, {})
    assert item.level is Level.PASS, item

    outside = tmp_path.parent / f"{tmp_path.name}-vault" / "age.txt"
    outside.parent.mkdir()
    outside.write_text("AGE-SECRET-KEY-1QQQ\n")
    [item] = secrets_items(plan, seen, NOW, {"SAFEHOLD_AGE_IDENTITY_FILE": str(outside)})
    assert item.level is Level.PASS
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "age.txt").write_text("# key\nAGE-SECRET-KEY-1QQQ\n")
    [item] = secrets_items(plan, seen, NOW, {})
    assert item.level is Level.FAIL and "config/age.txt" in item.detail
    assert "password manager" in item.fix and "AGE-SECRET-KEY" not in item.detail


def test_offsite_login_apart_from_production(tmp_path: Path) -> None:
    """copies:offsite-login: no item without an offsite; s3 keys, profiles and the AWS_*
    fallback, and sftp account plus key, each compared with production's, never shown."""
    local = '[[destinations]]\nname = "local"\nrepository = "backups"\n'
    assert offsite_login_item(_plan(tmp_path, destinations=local), {}) is None

    def s3(name: str, login: str) -> str:
        return (
            f'[[destinations]]\nname = "{name}"\ntype = "s3"\nurl = "s3:https://h/{name}"\n{login}'
        )

    keys = 'access_key_id = "AKIAPRODUCTION01"\nsecret_access_key = "prod-secret-value"\n'
    other = 'access_key_id = "AKIAOFFSITEKEY02"\nsecret_access_key = "offsite-secret-val"\n'
    cases = [
        (s3("prod", keys) + s3("offsite", other), {}, Level.PASS),
        (s3("prod", keys) + s3("offsite", keys), {}, Level.FAIL),
        (s3("prod", "") + s3("offsite", ""), {"AWS_ACCESS_KEY_ID": "AKIAFROMENV0003"}, Level.FAIL),
        (s3("prod", "") + s3("offsite", 'profile = "offsite"\n'), {}, Level.PASS),
        (s3("prod", 'profile = "p"\n') + s3("offsite", 'profile = "p"\n'), {}, Level.FAIL),
        (local + s3("offsite", ""), {}, Level.PASS),  # a local folder has no login to share
    ]
    for destinations, environ, level in cases:
        item = offsite_login_item(_plan(tmp_path, destinations=destinations), environ)
        assert item is not None and item.level == level, (destinations, item)
        text = f"{item.detail} {item.fix}"
        for secret in ("AKIAPRODUCTION01", "AKIAOFFSITEKEY02", "AKIAFROMENV0003", "secret-val"):
            assert secret not in text, text
        if level == Level.FAIL:
            assert "offsite signs in with the same login as prod" in item.detail
            assert "access_key_id" in item.fix

    def sftp(name: str, url: str, identity: str | None) -> str:
        login = f'identity = "{identity}"\n' if identity else ""
        return f'[[destinations]]\nname = "{name}"\ntype = "sftp"\nurl = "{url}"\n{login}'

    same_host = "sftp:backup@nas.example.net:/srv"
    cases_sftp = [
        (sftp("nas", same_host, "/k/a") + sftp("offsite", f"{same_host}2", "/k/a"), Level.FAIL),
        (sftp("nas", same_host, "/k/a") + sftp("offsite", f"{same_host}2", "/k/b"), Level.PASS),
        (sftp("nas", same_host, None)
         + sftp("offsite", "sftp://copy@far.example.org:2222//r", None), Level.PASS),
    ]  # fmt: skip
    for destinations, level in cases_sftp:
        item = offsite_login_item(_plan(tmp_path, destinations=destinations), {})
        assert item is not None and item.level == level, (destinations, item)
        if level == Level.FAIL:
            assert 'identity = "PATH"' in item.fix
