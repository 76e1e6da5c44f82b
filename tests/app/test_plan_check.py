"""`plan check`'s findings: offline refusals (never echoing a secret) and, with connect, a try
of every source and destination against the real PostgreSQL and MariaDB fixtures."""

from __future__ import annotations

from pathlib import Path

from safehold.app.opener import create_destination
from safehold.app.plan_check import check_plan, nearest_name
from safehold.plan import load_plan
from safehold.plan.models import Plan
from tests.servers import MariadbServer, PostgresServer

SECRET = "Sup3rSecretValue"
HEADER = 'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1h"\nrto = "1h"\n'


def plan_in(folder: Path, body: str, environ: dict[str, str] | None = None) -> Plan:
    (folder / "safehold.toml").write_text(HEADER + body)
    return load_plan(cwd=folder, environ=environ or {})


def local(name: str = "local") -> str:
    return f'[[destinations]]\nname = "{name}"\nrepository = "repo"\n'


def files(*paths: str) -> str:
    listed = ", ".join(f'"{p}"' for p in paths)
    return f'[[sources]]\nname = "up"\ntype = "files"\npaths = [{listed}]\n'


def lines(plan: Plan, connect: bool = False, environ: dict[str, str] | None = None) -> list[str]:
    return [finding.line() for finding in check_plan(plan, environ or {}, connect=connect)]


def test_a_missing_path_is_named_with_the_nearest_folder(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    plan = plan_in(tmp_path, files("meida", "media") + local())
    assert lines(plan) == ['FAIL source up: meida does not exist (did you mean "media"?)']
    assert nearest_name(tmp_path / "zzz" / "deeper") is None


def test_a_good_offline_plan_has_no_findings(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    assert lines(plan_in(tmp_path, files("media") + local())) == []


def test_an_unknown_apprise_scheme_is_refused_without_its_token(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    body = files("media") + local()
    body += f'[[alerts.channels]]\nname = "ops"\nurl = "slak://{SECRET}/T0/B0"\n'
    body += '[[alerts.channels]]\nname = "mail"\nurl = "mailtos://u:p@example.com"\n'
    found = lines(plan_in(tmp_path, body))
    assert found == [
        "FAIL alert channel ops: apprise knows no slak:// URLs (did you mean slack://?)"
    ]


def test_credentials_in_an_s3_url_are_refused_and_never_printed(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    body = files("media") + local()
    body += (
        '[[destinations]]\nname = "offsite"\ntype = "s3"\n'
        'url = "s3:https://${KEY}:${S3_SECRET}@s3.example.com/bucket/app"\n'
    )
    plan = plan_in(tmp_path, body, {"KEY": "AKIAEXAMPLE", "S3_SECRET": SECRET})
    (finding,) = check_plan(plan, {}, connect=False)
    assert finding.what == "destination offsite" and finding.failed
    assert "s3:https://s3.example.com/bucket/app" in finding.fix
    assert "access_key_id" in finding.fix
    assert SECRET not in finding.line() and "AKIAEXAMPLE" not in finding.line()


def _kdf_env(password: str) -> dict[str, str]:
    return {"SAFEHOLD_PASSWORD": password, "SAFEHOLD_KDF_N": "1024"}


def test_connect_on_a_broken_plan(
    tmp_path: Path, postgres_server: PostgresServer, mariadb_server: MariadbServer
) -> None:
    pg = postgres_server.url("postgres", password="wrong-" + SECRET)
    my = mariadb_server.url("", password="wrong-" + SECRET)
    body = files("uplods") + local()
    body += '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "${PG}"\n'
    body += '[[sources]]\nname = "shop"\ntype = "mysql"\nurl = "${MY}"\n'
    (tmp_path / "uploads").mkdir()
    plan = plan_in(tmp_path, body, {"PG": pg, "MY": my})
    found = check_plan(plan, _kdf_env("pw"), connect=True)
    text = "\n".join(finding.line() for finding in found)
    assert [f.status for f in found] == ["FAIL"] * 4, text
    assert 'uplods does not exist (did you mean "uploads"?)' in text
    db, shop = found[1], found[2]
    assert db.what == "source db" and "password authentication failed" in db.detail
    assert "check the user and password" in db.fix
    assert shop.what == "source shop" and "Access denied" in shop.detail
    assert "check the user and password" in shop.fix
    assert "no repository at" in found[3].detail and "safehold init" in found[3].fix
    assert SECRET not in text


def test_connect_on_a_good_plan(
    tmp_path: Path, postgres_server: PostgresServer, mariadb_server: MariadbServer
) -> None:
    (tmp_path / "uploads").mkdir()
    body = files("uploads") + local()
    body += '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "${PG}"\n'
    body += '[[sources]]\nname = "shop"\ntype = "mysql"\nurl = "${MY}"\n'
    body += '[[sources]]\nname = "export"\ntype = "command"\ncommand = "echo hi"\n'
    environ = {"PG": postgres_server.url("postgres"), "MY": mariadb_server.url("")}
    plan = plan_in(tmp_path, body, environ)
    env = _kdf_env("good password")
    create_destination(plan.destinations[0], b"good password", env)
    found = check_plan(plan, env, connect=True)
    text = "\n".join(finding.line() for finding in found)
    assert not any(finding.failed for finding in found), text
    assert "ok source up: uploads: exists and is readable" in text
    assert "ok source db: PostgreSQL 1" in text
    assert "ok source db: pg_dump: pg_dump (PostgreSQL) 1" in text
    assert "ok source shop: MySQL/MariaDB " in text and "MariaDB" in text
    assert "skip source export" in text
    assert "ok destination local: repository " in text
