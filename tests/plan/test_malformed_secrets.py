"""No secret in any output, even from malformed input (issue 14, part 8): a corpus of typos in
source URLs, ping URLs, alert URLs and credential fields, through `plan check`, the plan's
error messages, `backup` (the snapshot JSON stored in the repository), `runbook` and
`snapshots`. Secrets are judged by what a value is (redaction.field_secrets), not only by
whether it parses as a URL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from safehold.backends import LocalBackend
from safehold.plan.errors import PlanError
from safehold.plan.loader import parse_plan
from safehold.plan.redact import Redactor
from safehold.redaction import (
    field_secrets,
    location_secrets,
    mask_location,
    redact_url,
    secret_pieces,
)
from safehold.repo.format import FileType
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli

SECRET = "Zq7SecretValue42"

# Source URLs a hand (or a copy-paste) got wrong; each holds SECRET where the password goes.
SOURCE_URLS = [
    f"postgres://appuser:{SECRET}//db.invalid/shop",  # `@` typed as `/`
    f"postgresql://appuser:{SECRET}/shop",  # no host at all
    f"postgresql://appuser:{SECRET}",
    f"postgresql://appuser:{SECRET}@@db.invalid/shop",
    f"postgresql://appuser:{SECRET}@db.invalid:port/shop",
    f"postgresql://appuser:Zq7/{SECRET}@db.invalid/shop",  # a raw `/` in the password
    f"postgresql://db.invalid/shop?sslmode=require&password={SECRET}",
    f"appuser:{SECRET}@db.invalid/shop",  # no scheme
    f"postgres:/appuser:{SECRET}@db.invalid/shop",
    f"postgres//appuser:{SECRET}@db.invalid/shop",
    f"postgresql:appuser:{SECRET}@db.invalid/shop",
    f"mysql://root:{SECRET}//db.invalid/shop",
    f"mysql://root:{SECRET}/shop",
    f"root:{SECRET}@tcp(db.invalid:3306)/shop",
]
DESTINATION_URLS = [
    f"sftp:backup:{SECRET}@backup.invalid:/srv/repo",
    f"sftp://backup:{SECRET}backup.invalid/srv/repo",
    f"s3:https://AKIAEXAMPLE:{SECRET}@s3.invalid/bucket",
    f"rest:http://user:{SECRET}//rest.invalid:8000/",
    f"rest:http://rest.invalid:8000/?token={SECRET}",
]
PING_URLS = [
    f"hc-ping.com/{SECRET}",
    f"//hc-ping.com/{SECRET}",
    f"htps://hc-ping.com/{SECRET}",
    f"ftp://hc-ping.com/{SECRET}",
    f"hc-ping.com {SECRET}",
    f"https//hc-ping.com/{SECRET}",
]
BUCKET = '[[sources]]\nname = "up"\ntype = "bucket"\nurl = "s3:https://s3.example.net/uploads/p"\n'
ALERT_URLS = [
    f"hooks.slack.com/services/T000/B000/{SECRET}",
    f"slack:/T000/B000/{SECRET}",
    f"json//alerts.invalid/{SECRET}",
    f"tgram//{SECRET}/12345",
]


def _plan(source_url: str = "postgresql://app@127.0.0.1:1/shop", extra: str = "") -> str:
    kind = "mysql" if "mysql" in source_url or "tcp(" in source_url else "postgres"
    return f"""\
app = "shop"
env = "prod"

[targets]
rpo = "24h"
rto = "1h"

[[sources]]
name = "db"
type = "{kind}"
url = "${{DATABASE_URL}}"

[[destinations]]
name = "local"
repository = "repo"
{extra}"""


def _write(app: Path, text: str, database_url: str) -> Path:
    app.mkdir(parents=True, exist_ok=True)
    (app / "safehold.toml").write_text(text)
    (app / ".env").write_text(f"DATABASE_URL={database_url}\n")
    return app / "safehold.toml"


def _clean(done: subprocess.CompletedProcess[str], *secrets: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    for secret in secrets:
        assert secret not in done.stdout + done.stderr, (done.args, done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("sources", 0, "url"), url) for url in SOURCE_URLS]
    + [(("destinations", 1, "repository"), url) for url in SOURCE_URLS[:6]]
    + [(("destinations", 1, "url"), url) for url in DESTINATION_URLS]
    + [(("pings", "backup"), url) for url in PING_URLS]
    + [(("alerts", "channels", 0, "url"), url) for url in ALERT_URLS]
    + [(("sources", 1, "secret_access_key"), SECRET), (("destinations", 0, "password"), SECRET)],
)
def test_no_field_rule_lets_the_secret_through(path: tuple[str | int, ...], value: str) -> None:
    secrets = field_secrets(path, value)
    masked = value
    for secret in sorted(secrets, key=len, reverse=True):
        masked = masked.replace(secret, "***")
    assert SECRET not in masked, (path, value, secrets)


@pytest.mark.parametrize("url", SOURCE_URLS)
def test_a_location_keeps_its_host_but_never_its_password(url: str) -> None:
    shown = mask_location(url)
    assert SECRET not in shown
    assert "shop" in shown or not url.endswith("shop")


def test_the_text_rule_knows_a_missing_at_from_a_port() -> None:
    assert redact_url("postgres://u:pw//h/db") == "postgres://u:***//h/db"
    assert redact_url("postgresql://u:secret/db") == "postgresql://u:***/db"
    assert redact_url("postgresql://db.example:5432/shop") == "postgresql://db.example:5432/shop"
    assert redact_url("postgresql://[::1]:5432/shop") == "postgresql://[::1]:5432/shop"
    assert redact_url("postgresql://u:${DB_PASSWORD}/db") == "postgresql://u:${DB_PASSWORD}/db"
    assert field_secrets(("sources", 0, "password_file"), "/run/secrets/db") == []
    assert field_secrets(("owners", "contacts", "ops"), "mailto:alice@example.com") == []
    assert field_secrets(("sources", 1, "access_key_id"), "AKIAEXAMPLE") == []
    assert field_secrets(("destinations", 0, "secret_access_key"), 12345678) == ["12345678"]


@pytest.mark.parametrize("url", SOURCE_URLS)
def test_malformed_source_urls_through_plan_check_backup_runbook_and_status(
    tmp_path: Path, run_cli: RunCli, url: str
) -> None:
    app = tmp_path / "app"
    plan_file = _write(app, _plan(url), url)
    plan = ["--plan", str(plan_file)]
    checked = run_cli(*plan, "plan", "check")
    _clean(checked, SECRET)
    as_json = run_cli(*plan, "plan", "check", "--json")
    _clean(as_json, SECRET)
    assert as_json.returncode == checked.returncode, as_json.stderr
    try:
        parse_plan(plan_file.read_text(), file=plan_file, environ={})
    except PlanError as err:  # refused: the message and hint say so without the secret
        assert checked.returncode != 0
        assert SECRET not in err.message + (err.hint or "")
        assert "sources[0].url" in checked.stderr
        return
    assert checked.returncode == 0, checked.stderr
    shown = json.dumps(json.loads(as_json.stdout))
    assert "***" in shown  # the location is in the JSON, masked
    assert "***" in checked.stdout
    connected = run_cli(*plan, "plan", "check", "--connect")
    _clean(connected, SECRET)
    assert connected.returncode != 0  # db.invalid cannot be reached
    Repository.init(LocalBackend(app / "repo"), TEST_PASSWORD.encode(), kdf=KdfParams(1024, 8, 1))
    backed_up = run_cli(*plan, "backup", "--json")
    _clean(backed_up, SECRET)
    repository = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    stored_ids = repository.list_ids(FileType.SNAPSHOT)
    if backed_up.returncode == 3:  # the source failed; the snapshot names it, redacted
        assert "source db failed" in backed_up.stderr
        [snapshot_id] = stored_ids
        stored = repository.load_unpacked(FileType.SNAPSHOT, snapshot_id).decode()
        assert SECRET not in stored, stored
        assert "***" in stored  # the location is there, masked
    else:  # refused before any snapshot: one line naming the URL (masked) and the fix
        assert backed_up.returncode == 1, backed_up.stderr
        assert re.search(r"invalid (PostgreSQL|MySQL) URL .*\*\*\*", backed_up.stderr)
        assert "hint:" in backed_up.stderr and "percent-encode" in backed_up.stderr
        assert stored_ids == []
    listed = run_cli(*plan, "snapshots", "--json")
    _clean(listed, SECRET)
    assert listed.returncode == 0, listed.stderr
    for status in (["status"], ["status", "--json"], ["metrics"]):
        scored = run_cli(*plan, *status)
        _clean(scored, SECRET)
        assert scored.stdout.strip(), (status, scored.stderr)
    runbook = run_cli(*plan, "runbook")
    _clean(runbook, SECRET)
    assert runbook.returncode == 0, runbook.stderr
    for written in ("RUNBOOK.md", "RUNBOOK.html"):
        text = (app / written).read_text()
        assert SECRET not in text, written
    assert any(
        shown in (app / "RUNBOOK.md").read_text()
        for shown in ("appuser:***", "root:***", "password=***")
    )


@pytest.mark.parametrize(
    ("extra", "where"),
    [(f'[pings]\nbackup = "{url}"\n', "pings.backup") for url in PING_URLS]
    + [
        (f'[[alerts.channels]]\nname = "ops"\nurl = "{url}"\n', "alerts.channels[0].url")
        for url in ALERT_URLS
    ]
    + [
        ('[pings]\nbackup = "${PING_URL}"\n', "pings.backup"),
        (f'{BUCKET}secret_access_key = "{SECRET}"\n', "sources[1]"),
        (f'{BUCKET}access_key_id = "AKIAEXAMPLE"\nsecret_access_key = ["{SECRET}"]\n',
         "sources[1].secret_access_key"),
    ],
)  # fmt: skip
def test_malformed_ping_alert_and_credential_values_in_plan_errors(
    tmp_path: Path, run_cli: RunCli, extra: str, where: str
) -> None:
    app = tmp_path / "app"
    plan_file = _write(app, _plan(extra=extra), "postgresql://app@127.0.0.1:1/shop")
    with (app / ".env").open("a") as env:
        env.write(f"PING_URL=hc-ping.com/{SECRET}\n")
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_file.read_text(), file=plan_file, environ={})
    assert SECRET not in caught.value.message + (caught.value.hint or "")
    assert where in caught.value.message
    commands = (["plan", "check"], ["plan", "check", "--json"], ["backup"], ["status"])
    for command in (*commands, ["status", "--json"], ["runbook"]):
        done = run_cli("--plan", str(plan_file), *command)
        _clean(done, SECRET)
        assert done.returncode != 0 and where in done.stderr, (command, done.stderr)


QUOTED = 'Zq7"Secret\\Value42'  # a quote and a backslash: JSON and TOML escape them


@pytest.mark.parametrize(
    ("snippet", "secret", "where"),
    [
        (  # a credential given as a number: the type error must not echo it
            f'{BUCKET}access_key_id = "AKIAEXAMPLE"\nsecret_access_key = 98765432101234\n',
            "98765432101234",
            "sources[1].secret_access_key",
        ),
        (  # a scratch server without its scheme, the password before the `@`
            f'[drill]\nscratch_postgres = "drill:{SECRET}@127.0.0.1:5432/postgres"\n',
            SECRET,
            "drill.scratch_postgres",
        ),
        (  # a password with a quote and a backslash, echoed inside a quoted "found"
            '[[sources]]\nname = "other"\ntype = "postgres"\n'
            f"url = '''postgres//app:{QUOTED}@db/shop'''\n",
            QUOTED,
            "sources[1].url",
        ),
        (  # an alert URL whose scheme lost its colon, token and all
            f'[[alerts.channels]]\nname = "chat"\nurl = "tgram//{SECRET}/-100123"\n',
            SECRET,
            "alerts.channels[0].url",
        ),
    ],
)  # fmt: skip
def test_plan_errors_never_echo_a_malformed_secret(
    tmp_path: Path, run_cli: RunCli, snippet: str, secret: str, where: str
) -> None:
    app = tmp_path / "app"
    plan_file = _write(app, _plan(extra=snippet), "postgresql://app@127.0.0.1:1/shop")
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_file.read_text(), file=plan_file, environ={})
    problems = [caught.value.message, caught.value.hint or "", *caught.value.problems]
    assert where in caught.value.message
    escaped = json.dumps(secret)[1:-1]
    for text in problems:
        assert secret not in text and escaped not in text, text
    assert "***" in caught.value.message
    for command in (["plan", "check"], ["plan", "check", "--json"], ["status", "--json"]):
        done = run_cli("--plan", str(plan_file), *command)
        _clean(done, secret, escaped)
        assert done.returncode != 0 and where in done.stderr, (command, done.stderr)


def test_encoded_and_split_forms_of_a_password_are_masked() -> None:
    redactor = Redactor()
    redactor.add(QUOTED)
    assert json.dumps({"url": f"x:{QUOTED}@h"}).count("Secret") == 1
    assert "Secret" not in redactor(json.dumps({"url": f"x:{QUOTED}@h"}))
    assert secret_pieces(f"Zq7/{SECRET}") == [SECRET]
    assert secret_pieces(SECRET) == []
    assert location_secrets(f"postgresql://u:Zq7/{SECRET}@h/db") == [f"Zq7/{SECRET}", SECRET]
    redactor.add_url(f"postgresql://u:Zq7/{SECRET}@h/db")
    assert redactor(f"database {SECRET}@h/db") == "database ***@h/db"
