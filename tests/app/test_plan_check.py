"""`plan check`'s findings: offline refusals (never echoing a secret) and, with connect, a try
of every source and destination against the real PostgreSQL and MariaDB fixtures."""

from __future__ import annotations

from pathlib import Path

from safehold.app.opener import create_destination
from safehold.app.plan_check import check_plan, nearest_name
from safehold.plan import load_plan
from safehold.plan.describe import describe_plan
from safehold.plan.models import Plan
from tests.s3server import SeaweedServer
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


def test_a_destination_secret_written_into_the_plan_is_refused(tmp_path: Path) -> None:
    """A literal secret_access_key fails plan check (named, never shown); as ${VAR} it passes."""
    (tmp_path / "media").mkdir()
    body = files("media") + local()
    offsite = '[[destinations]]\nname = "off-site"\ntype = "s3"\nurl = "s3:https://h/b"\n'
    literal = f'access_key_id = "AKIAEXAMPLE0001"\nsecret_access_key = "{SECRET}"\n'
    (finding,) = check_plan(plan_in(tmp_path, body + offsite + literal), {}, connect=False)
    assert finding.what == "destination off-site" and finding.failed
    assert "written into the plan" in finding.detail
    assert 'secret_access_key = "${OFF_SITE_S3_SECRET}"' in finding.fix
    assert SECRET not in finding.line()
    described = describe_plan(plan_in(tmp_path, body + offsite + literal), {})
    assert "  login: key AKIA…0001 written in the plan" in described
    assert not any(SECRET in line for line in described)

    referenced = 'access_key_id = "${KEY_ID}"\nsecret_access_key = "${OFF_SECRET}"\n'
    plan = plan_in(tmp_path, body + offsite + referenced,
                   {"KEY_ID": "AKIAEXAMPLE0002", "OFF_SECRET": SECRET})  # fmt: skip
    assert check_plan(plan, {}, connect=False) == []
    assert "  login: key AKIA…0002 from ${KEY_ID}" in describe_plan(plan, {})


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


def _bucket(name: str, url: str, keys: bool = True) -> str:
    body = f'[[sources]]\nname = "{name}"\ntype = "bucket"\nurl = "{url}"\n'
    if keys:
        body += 'access_key_id = "${KEY}"\nsecret_access_key = "${S3_SECRET}"\n'
    return body


def test_connect_lists_bucket_sources_with_their_own_keys(
    tmp_path: Path, s3_server: SeaweedServer
) -> None:
    bucket = s3_server.bucket_name("chk")
    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.client().put_object(Bucket=bucket, Key="media/a.txt", Body=b"a")
    base = f"s3:{s3_server.endpoint}"
    body = (_bucket("good", f"{base}/{bucket}/media") + _bucket("wrongkey", f"{base}/{bucket}")
            + _bucket("nobucket", f"{base}/missing-{bucket}") + local())  # fmt: skip
    good = plan_in(tmp_path, body, {"KEY": s3_server.access_key, "S3_SECRET": s3_server.secret_key})
    found = {f.what: f for f in check_plan(good, {}, connect=True) if f.what.startswith("source")}
    assert found["source good"].status == "ok", found["source good"].line()
    assert "1 object(s) on the first page" in found["source good"].detail
    assert found["source nobucket"].failed and "NoSuchBucket" in found["source nobucket"].detail
    assert "bucket name" in found["source nobucket"].fix

    wrong = plan_in(tmp_path, body, {"KEY": s3_server.access_key, "S3_SECRET": SECRET})
    finding = next(f for f in check_plan(wrong, {}, connect=True) if f.what == "source wrongkey")
    assert finding.failed and "SignatureDoesNotMatch" in finding.detail
    assert "access_key_id/secret_access_key" in finding.fix
    assert SECRET not in finding.line()
    described = "\n".join(describe_plan(wrong))
    assert "signs in with its own keys" in described and SECRET not in described


def test_connect_checks_secrets_by_name(tmp_path: Path) -> None:
    import pyrage

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "master.key").write_text(SECRET)
    (tmp_path / ".env").write_text(f"SECRET_KEY={SECRET}\n")
    body = ('[[sources]]\nname = "keys"\ntype = "secrets"\n'
            'files = [".env", "config/master.key", "certs/*.key", "config/gone.key"]\n'
            'env = ["SAFEHOLD_TEST_UNSET_VARIABLE", "HOME"]\n'
            f'recipients = ["{recipient}"]\n' + local())  # fmt: skip
    (finding,) = [f for f in check_plan(plan_in(tmp_path, body), {}, connect=True)
                  if f.what == "source keys"]  # fmt: skip
    assert finding.failed
    assert "certs/*.key matches no file" in finding.detail
    assert "secret file config/gone.key does not exist" in finding.detail
    assert "environment variable SAFEHOLD_TEST_UNSET_VARIABLE is not set" in finding.detail
    assert "HOME" not in finding.detail and SECRET not in finding.line()
    fixed = body.replace(', "certs/*.key", "config/gone.key"', "").replace(
        '"SAFEHOLD_TEST_UNSET_VARIABLE", ', ""
    )
    (ok,) = [f for f in check_plan(plan_in(tmp_path, fixed), {}, connect=True)
             if f.what == "source keys"]  # fmt: skip
    assert ok.status == "ok" and "1 age recipient(s) parse" in ok.detail
