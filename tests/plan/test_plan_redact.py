"""Secrets never reach the user: not in describe(), not in any PlanError."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.plan import Redactor
from safehold.plan.describe import describe_plan
from safehold.redaction import is_secret_name, redact_url, url_password
from tests.plan.helpers import DESTINATION, HEAD, MINIMAL, ErrorOf, LoadText

PG_PASSWORD = "pg-S3cret-value"
API_TOKEN = "tok_live_abcdef123456"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://app:hunter22@db:5432/shop", "postgresql://app:***@db:5432/shop"),
        ("postgres://app:p%40ss@db/shop", "postgres://app:***@db/shop"),
        ("mysql://root:pw@127.0.0.1:3306/x", "mysql://root:***@127.0.0.1:3306/x"),
        ("mysql://root@h/x", "mysql://root@h/x"),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        ("postgresql://u:a@b@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://h/db?sslmode=require&password=x",
            "postgresql://h/db?sslmode=require&password=***",
        ),
        ("postgresql://u:${DB_PASSWORD}@h/db", "postgresql://u:${DB_PASSWORD}@h/db"),
        ("postgresql://u:@h/db", "postgresql://u:@h/db"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_url_password() -> None:
    assert url_password("postgresql://app:p%40ss@db/shop") == "p%40ss"
    assert url_password("postgresql://app@db/shop") is None


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DB_PASSWORD", True),
        ("PGPASS", True),
        ("STRIPE_SECRET", True),
        ("GITHUB_TOKEN", True),
        ("api_key", True),
        ("DATABASE_URL", False),
        ("HOME", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redactor() -> None:
    redactor = Redactor(["hunter22", "p@ss"])
    redactor.add_url("postgres://u:w%2Fx@h/db?sslpassword=zz-top")
    text = "hunter22 then p@ss and p%40ss, w/x, zz-top in postgres://x:y@h/ and hunter22"
    assert redactor.redact(text) == "*** then *** and ***, ***, *** in postgres://x:***@h/ and ***"
    assert redactor(text) == redactor.redact(text)


def test_short_secrets_are_replaced_as_whole_words() -> None:
    redactor = Redactor(["pw"])
    assert redactor("user pw, pwd, upw") == "user ***, pwd, upw"


SECRET_PLAN = (
    HEAD
    + '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "${DATABASE_URL}"\n'
    + 'owner = "alice"\ncredentials_at = "vault infra"\n'
    + '[[sources]]\nname = "api"\ntype = "command"\n'
    + 'command = "./export.sh --token ${API_TOKEN}"\n'
    + DESTINATION
)


def test_describe_never_shows_secrets(load_text: LoadText, tmp_path: Path) -> None:
    plan = load_text(
        SECRET_PLAN,
        {"DATABASE_URL": f"postgresql://app:{PG_PASSWORD}@db.internal:5432/shop"},
        dotenv=f"API_TOKEN={API_TOKEN}\n",
    )
    lines = describe_plan(plan)
    text = "\n".join(lines)
    assert PG_PASSWORD not in text and API_TOKEN not in text
    assert lines == [
        f"plan: {tmp_path / 'safehold.toml'}",
        "app: myapp (prod)",
        "targets: lose at most 1d of data (RPO), restore within 1h (RTO)",
        "source db (postgres): postgresql://app:***@db.internal:5432/shop",
        "  databases: shop",
        "  with roles and grants",
        "  4 restore jobs",
        "  owner alice",
        "  credentials at vault infra",
        "source api (command): `./export.sh --token ***`",
        f"  run in {tmp_path}",
        "  output stored as api.out",
        "  timeout 1h",
        f"destination local (local): {tmp_path / 'backups'}",
        "  password from the environment (SAFEHOLD_PASSWORD_FILE, SAFEHOLD_PASSWORD_COMMAND or "
        "SAFEHOLD_PASSWORD)",
        "drills: at least every 31d, into throwaway servers and temp folders",
    ]
    secret = {item.variable: item.secret for item in plan.substitutions}
    assert secret == {"DATABASE_URL": True, "API_TOKEN": True}
    assert PG_PASSWORD not in repr(plan.substitutions)


def test_password_command_secrets_are_redacted(load_text: LoadText) -> None:
    plan = load_text(
        MINIMAL + 'password_command = "echo ${SAFEHOLD_PASSWORD}"\n',
        {"SAFEHOLD_PASSWORD": "correct horse battery"},
    )
    assert "correct horse" not in "\n".join(describe_plan(plan))
    assert "  password from the command `echo ***`" in describe_plan(plan)


def test_literal_url_password_is_redacted(load_text: LoadText) -> None:
    plan = load_text(MINIMAL.replace("postgresql://app@", f"postgresql://app:{PG_PASSWORD}@"))
    assert PG_PASSWORD not in "\n".join(describe_plan(plan))
    assert plan.redactor()(f"pg_dump failed: password {PG_PASSWORD} rejected") == (
        "pg_dump failed: password *** rejected"
    )


def test_bad_url_scheme_error_is_redacted(error_of: ErrorOf) -> None:
    error = error_of(
        MINIMAL.replace("postgresql://app@db.internal:5432/shop", "${DATABASE_URL}"),
        {"DATABASE_URL": f"mysql://app:{PG_PASSWORD}@db.internal/shop"},
    )
    assert error.message == (
        "safehold.toml: sources[0].url: expected a postgresql:// or postgres:// URL; "
        'found "mysql://app:***@db.internal/shop"'
    )
    assert PG_PASSWORD not in error.hint


def test_secret_variable_in_a_bad_value_is_redacted(error_of: ErrorOf) -> None:
    error = error_of(
        MINIMAL.replace('env = "prod"', 'env = "${DEPLOY_TOKEN}"'), {"DEPLOY_TOKEN": API_TOKEN}
    )
    assert (
        error.message == 'safehold.toml: env: expected an environment name like prod; found "***"'
    )


def test_secret_in_other_problems_is_redacted(error_of: ErrorOf) -> None:
    text = MINIMAL.replace('app = "myapp"', 'app = "${APP_SECRET}"').replace(
        "postgresql://app@db.internal:5432/shop", f"ftp://u:{PG_PASSWORD}@h"
    )
    error = error_of(text, {"APP_SECRET": API_TOKEN})
    everything = " ".join([error.message, error.hint, *error.problems])
    assert API_TOKEN not in everything and PG_PASSWORD not in everything
    assert len(error.problems) == 2


def test_missing_variable_error_shows_no_other_values(error_of: ErrorOf) -> None:
    text = MINIMAL.replace("postgresql://app@db", "postgresql://app:${DB_PASSWORD}@${DB_HOST}")
    error = error_of(text, {"DB_PASSWORD": PG_PASSWORD})
    assert "DB_HOST" in error.message
    assert PG_PASSWORD not in error.message + error.hint
