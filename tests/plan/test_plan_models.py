"""Loading valid plans: the full example, defaults, relative paths, finding the plan file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from safehold.errors import UsageError
from safehold.plan import (
    CommandConfig,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SQLiteConfig,
    describe_plan,
    find_plan,
    load_plan,
)
from tests.plan.helpers import DESTINATION, HEAD, MINIMAL, LoadText

FULL = """\
app = "myapp"
env = "prod"

[owners]
restore_approvers = ["alice@example.com"]
[owners.contacts]
alice = "alice@example.com, +1 555 0100"

[targets]
rpo = "24h"
rto = "1h"

[[sources]]
name = "db"
type = "postgres"
url = "${DATABASE_URL}"
databases = []
globals = true
jobs = 4
owner = "alice"
credentials_at = "1Password vault 'infra', item 'prod db'"

[[sources]]
name = "shop-db"
type = "mysql"
url = "${MYSQL_URL}"
databases = []

[[sources]]
name = "app-db"
type = "sqlite"
path = "data/app.sqlite3"

[[sources]]
name = "uploads"
type = "files"
paths = ["uploads", "/srv/media"]
exclude = ["*.tmp", "cache/"]

[[sources]]
name = "billing"
type = "command"
command = "./scripts/export-billing.sh --format json"
filename = "billing.json"
timeout = "10m"
notes = "Stripe does not export card numbers; re-collect them on restore"

[[destinations]]
name = "local"
repository = "/var/backups/myapp"
password_env = "SAFEHOLD_PASSWORD"
# password_file = "/etc/safehold/pass"
# password_command = "pass show safehold/myapp"

[retention]
[schedule]
"""

ENVIRON = {
    "DATABASE_URL": "postgresql://app:pg-Secret-1@db.internal:5432/shop",
    "MYSQL_URL": "mysql://shop:my-Secret-2@mysql.internal:3306/shopdb",
}


def test_full_example(load_text: LoadText, tmp_path: Path) -> None:
    plan = load_text(FULL, ENVIRON)
    assert (plan.app, plan.env, plan.name_prefix) == ("myapp", "prod", "myapp-prod")
    assert plan.file == tmp_path / "safehold.toml"
    assert plan.base_dir == tmp_path
    assert plan.owners.restore_approvers == ["alice@example.com"]
    assert plan.owners.contacts == {"alice": "alice@example.com, +1 555 0100"}
    assert plan.targets.rpo == timedelta(hours=24)
    assert plan.targets.rto == timedelta(hours=1)
    db, shop, app_db, uploads, billing = plan.sources
    assert isinstance(db, PostgresConfig)
    assert db.url == ENVIRON["DATABASE_URL"]
    assert (db.globals, db.jobs, db.owner) == (True, 4, "alice")
    assert db.credentials_at == "1Password vault 'infra', item 'prod db'"
    assert db.database_names() == ["shop"]
    assert isinstance(shop, MySQLConfig)
    assert shop.database_names() == ["shopdb"]
    assert isinstance(app_db, SQLiteConfig)
    assert app_db.path == tmp_path / "data" / "app.sqlite3"
    assert isinstance(uploads, FilesConfig)
    assert uploads.paths == [tmp_path / "uploads", Path("/srv/media")]
    assert uploads.exclude == ["*.tmp", "cache/"]
    assert isinstance(billing, CommandConfig)
    assert billing.output_name == "billing.json"
    assert billing.timeout == timedelta(minutes=10)
    assert billing.cwd == tmp_path
    assert billing.notes and "Stripe" in billing.notes
    destination = plan.destination()
    assert destination is plan.destination("local")
    assert destination.repository == Path("/var/backups/myapp")
    assert destination.password_env == "SAFEHOLD_PASSWORD"
    assert plan.retention == {} and plan.schedule is not None
    assert plan.source("billing") is billing


def test_defaults(load_text: LoadText, tmp_path: Path) -> None:
    text = (
        HEAD
        + '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "postgres://h"\n'
        + '[[sources]]\nname = "export"\ntype = "command"\ncommand = "echo hi"\n'
        + DESTINATION
    )
    plan = load_text(text)
    db, export = plan.sources
    assert isinstance(db, PostgresConfig) and isinstance(export, CommandConfig)
    assert (db.databases, db.globals, db.jobs, db.owner, db.credentials_at) == (
        [],
        True,
        4,
        None,
        None,
    )
    assert db.database_names() == []
    assert export.filename == "export.out" and export.output_name == "export.out"
    assert export.timeout == timedelta(hours=1)
    destination = plan.destinations[0]
    assert destination.type == "local"
    assert destination.password_env == "SAFEHOLD_PASSWORD"
    assert destination.password_file is None and destination.password_command is None
    assert destination.repository == tmp_path / "backups"
    assert plan.owners.restore_approvers == [] and plan.owners.contacts == {}


def test_relative_paths_are_relative_to_the_plan_folder(tmp_path: Path) -> None:
    app = tmp_path / "app"
    elsewhere = tmp_path / "elsewhere"
    app.mkdir()
    elsewhere.mkdir()
    text = (
        HEAD
        + '[[sources]]\nname = "s"\ntype = "sqlite"\npath = "../shared/app.db"\n'
        + '[[sources]]\nname = "f"\ntype = "files"\npaths = ["uploads", "./media/x", "/abs"]\n'
        + '[[sources]]\nname = "c"\ntype = "command"\ncommand = "./export.sh"\n'
        + '[[destinations]]\nname = "local"\nrepository = "local:../backups"\n'
        + 'password_file = "secrets/pass"\n'
    )
    (app / "safehold.toml").write_text(text)
    plan = load_plan(Path("../app/safehold.toml"), cwd=elsewhere, environ={"HOME": "/home/me"})
    sqlite, files, command = plan.sources
    assert isinstance(sqlite, SQLiteConfig) and isinstance(files, FilesConfig)
    assert isinstance(command, CommandConfig)
    assert sqlite.path == app / "../shared/app.db"
    assert files.paths == [app / "uploads", app / "media/x", Path("/abs")]
    assert command.cwd == app
    assert plan.destinations[0].repository == app / "../backups"
    assert plan.destinations[0].password_file == app / "secrets/pass"
    assert plan.destinations[0].password_source() == f"the file {app / 'secrets/pass'}"


def test_home_folder(load_text: LoadText) -> None:
    text = MINIMAL.replace('"backups"', '"~/backups"')
    plan = load_text(text, {"HOME": "/home/me"})
    assert plan.destinations[0].repository == Path("/home/me/backups")


def test_sqlite_file_need_not_exist(load_text: LoadText, tmp_path: Path) -> None:
    text = HEAD + '[[sources]]\nname = "s"\ntype = "sqlite"\npath = "new/app.db"\n' + DESTINATION
    plan = load_text(text)
    assert not (tmp_path / "new").exists()
    assert isinstance(plan.sources[0], SQLiteConfig)


def test_retention_is_kept_as_a_table(load_text: LoadText) -> None:
    text = MINIMAL + "[retention]\ndaily = 7\n[retention.monthly]\nkeep = 12\n"
    plan = load_text(text)
    assert plan.retention == {"daily": 7, "monthly": {"keep": 12}}


def test_password_sources(load_text: LoadText) -> None:
    plan = load_text(MINIMAL + 'password_command = "pass show safehold/myapp"\n')
    destination = plan.destinations[0]
    assert destination.password_env is None
    assert destination.password_source() == "the command `pass show safehold/myapp`"
    plan = load_text(MINIMAL + 'password_env = "MY_PASS"\n')
    assert plan.destinations[0].password_source() == "the environment variable MY_PASS"


def test_mariadb_url(load_text: LoadText) -> None:
    text = (
        HEAD + '[[sources]]\nname = "m"\ntype = "mysql"\nurl = "mariadb://u@h/db"\n' + DESTINATION
    )
    assert load_text(text).sources[0].type == "mysql"


def test_unknown_source_and_destination_names(load_text: LoadText) -> None:
    plan = load_text(MINIMAL)
    with pytest.raises(UsageError):
        plan.source("nope")
    with pytest.raises(UsageError):
        plan.destination("nope")


def test_find_plan_order(tmp_path: Path) -> None:
    for folder in ("explicit", "from-env", "cwd"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "safehold.toml").write_text(MINIMAL.replace("myapp", folder))
    cwd = tmp_path / "cwd"
    environ = {"SAFEHOLD_PLAN": str(tmp_path / "from-env" / "safehold.toml")}
    explicit = tmp_path / "explicit" / "safehold.toml"
    assert find_plan(explicit, cwd=cwd, environ=environ) == explicit
    assert load_plan(explicit, cwd=cwd, environ=environ).app == "explicit"
    assert load_plan(cwd=cwd, environ=environ).app == "from-env"
    assert load_plan(cwd=cwd, environ={}).app == "cwd"
    assert load_plan(cwd=cwd, environ={"SAFEHOLD_PLAN": ""}).app == "cwd"
    # a folder stands for the safehold.toml in it; relative paths are relative to cwd
    assert load_plan(Path("../explicit"), cwd=cwd, environ={}).app == "explicit"
    assert load_plan(cwd=cwd, environ={"SAFEHOLD_PLAN": "../from-env"}).app == "from-env"


def test_plan_without_a_file_uses_cwd() -> None:
    plan = Plan.model_validate(
        {
            "app": "a",
            "env": "b",
            "targets": {"rpo": "1h", "rto": "1h"},
            "sources": [{"name": "f", "type": "files", "paths": ["x"]}],
            "destinations": [{"name": "local", "repository": "r"}],
        }
    )
    assert plan.file is None
    assert plan.base_dir == Path.cwd()
    assert plan.sources[0].paths == [Path("x")]  # type: ignore[union-attr]
    assert describe_plan(plan)[0] == "app: a (b)"
