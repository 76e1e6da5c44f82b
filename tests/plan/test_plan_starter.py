"""The starter plan: what `detect` finds, and that `load_plan` accepts the rendered text."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from safehold.plan import (
    Detected,
    DetectedDatabase,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SQLiteConfig,
    detect,
    load_plan,
    render_starter_plan,
)
from safehold.plan.describe import describe_plan
from safehold.plan.models import BucketConfig, SecretsConfig
from safehold.plan.starter import repository_warning, slugify

PASSWORD = "pg-Starter-Secret"


def touch(path: Path, content: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def write_and_load(
    cwd: Path, environ: dict[str, str], repository: str = "backups"
) -> tuple[str, Plan]:
    detected = detect(cwd, environ)
    text = render_starter_plan(cwd.name, "prod", detected, repository)
    (cwd / "safehold.toml").write_text(text, encoding="utf-8")
    return text, load_plan(cwd=cwd, environ=environ)


def test_empty_folder_gets_a_placeholder_source(tmp_path: Path) -> None:
    app = tmp_path / "My App"
    app.mkdir()
    detected = detect(app, {})
    assert detected.empty and detected == Detected()
    text, plan = write_and_load(app, {})
    assert plan.app == "my-app" and plan.env == "prod"
    assert [source.name for source in plan.sources] == ["data"]
    assert plan.destinations[0].repository == app / "backups"
    assert "[[sources]]" in text and text.count("\n# ") > 20  # it explains itself


def test_postgres_uploads_and_sqlite(tmp_path: Path) -> None:
    environ = {"DATABASE_URL": f"postgresql://app:{PASSWORD}@db.internal:5432/shop"}
    (tmp_path / "uploads").mkdir()
    (tmp_path / "public" / "uploads").mkdir(parents=True)
    (tmp_path / "storage").mkdir()
    touch(tmp_path / "app.sqlite3")
    touch(tmp_path / "data" / "cache.db")
    touch(tmp_path / "var" / "lib" / "deep.sqlite")
    touch(tmp_path / "a" / "b" / "c" / "too-deep.db")
    touch(tmp_path / ".venv" / "lib.db")
    touch(tmp_path / "node_modules" / "x" / "y.db")
    touch(tmp_path / ".git" / "z.sqlite")
    touch(tmp_path / "notes.txt")

    detected = detect(tmp_path, environ)
    assert detected.databases == [DetectedDatabase("db", "postgres", "DATABASE_URL", "environment")]
    assert detected.folders == ["uploads", "storage", "public/uploads"]
    assert detected.sqlite_files == ["app.sqlite3", "data/cache.db", "var/lib/deep.sqlite"]

    text, plan = write_and_load(tmp_path, environ)
    assert PASSWORD not in text
    assert 'url = "${DATABASE_URL}"' in text
    db, app, cache, deep, files = plan.sources
    assert isinstance(db, PostgresConfig) and db.url == environ["DATABASE_URL"]
    assert isinstance(app, SQLiteConfig) and app.path == tmp_path / "app.sqlite3"
    assert isinstance(cache, SQLiteConfig) and cache.path == tmp_path / "data" / "cache.db"
    assert isinstance(deep, SQLiteConfig) and deep.name == "deep"
    assert isinstance(files, FilesConfig)
    assert files.paths == [tmp_path / "uploads", tmp_path / "storage", tmp_path / "public/uploads"]
    assert PASSWORD not in "\n".join(describe_plan(plan))


def test_mysql_urls_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# app settings\n"
        f'export DATABASE_URL="mysql://app:{PASSWORD}@h:3306/app"\n'
        "MYSQL_URL=mysql://shop@h/shop\n"
        "MARIADB_URL='mariadb://m@h/m'\n"
    )
    detected = detect(tmp_path, {})
    assert [(d.name, d.type, d.variable, d.origin) for d in detected.databases] == [
        ("db", "mysql", "DATABASE_URL", ".env"),
        ("mysql", "mysql", "MYSQL_URL", ".env"),
        ("mariadb", "mysql", "MARIADB_URL", ".env"),
    ]
    text, plan = write_and_load(tmp_path, {})
    assert PASSWORD not in text
    assert all(isinstance(source, MySQLConfig) for source in plan.sources)
    assert [source.name for source in plan.sources] == ["db", "mysql", "mariadb"]


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=mysql://a@h/db\n")
    detected = detect(tmp_path, {"DATABASE_URL": "postgres://a@h/db"})
    assert detected.databases == [DetectedDatabase("db", "postgres", "DATABASE_URL", "environment")]


@pytest.mark.parametrize(
    "url", ["sqlite:///data/app.db", "postgresql+psycopg2://u@h/db", "not-a-url"]
)
def test_unsupported_database_urls_become_notes(tmp_path: Path, url: str) -> None:
    environ = {"DATABASE_URL": url}
    detected = detect(tmp_path, environ)
    assert detected.databases == [] and len(detected.notes) == 1
    assert detected.notes[0].startswith("DATABASE_URL uses ")
    text, plan = write_and_load(tmp_path, environ)
    assert "# Not added: DATABASE_URL uses" in text
    assert [source.name for source in plan.sources] == ["data"]


def test_names_stay_unique_and_valid(tmp_path: Path) -> None:
    touch(tmp_path / "db.sqlite3")
    touch(tmp_path / "x" / "db.sqlite3")
    touch(tmp_path / "files.db")
    touch(tmp_path / "Ünïcode Name.db")
    (tmp_path / "media").mkdir()
    environ = {"DATABASE_URL": "postgres://u@h/db"}
    _text, plan = write_and_load(tmp_path, environ)
    names = [source.name for source in plan.sources]
    assert names == ["db", "db-2", "files", "db-3", "n-code-name", "media"]


def test_literal_values_are_escaped(tmp_path: Path) -> None:
    app = tmp_path / 'we"ird $app'
    app.mkdir()
    touch(app / "data" / "${HOME}.db")
    _text, plan = write_and_load(app, {"HOME": "/root"}, repository='/srv/ba$$ckups "x"')
    sqlite = plan.sources[0]
    assert isinstance(sqlite, SQLiteConfig) and sqlite.path == app / "data" / "${HOME}.db"
    assert plan.destinations[0].repository == Path('/srv/ba$$ckups "x"')
    assert plan.app == "we-ird-app"


def test_rendering_a_hand_made_detection(tmp_path: Path) -> None:
    detected = Detected(
        databases=[
            DetectedDatabase("db", "postgres", "DATABASE_URL", "environment"),
            DetectedDatabase("shop", "mysql", "SHOP_URL", ".env"),
        ],
        folders=["uploads"],
        sqlite_files=["app.sqlite3"],
    )
    text = render_starter_plan("shop", "staging", detected, "/var/backups/shop")
    (tmp_path / "safehold.toml").write_text(text)
    environ = {"DATABASE_URL": "postgres://u@h/db", "SHOP_URL": "mysql://u@h/shop"}
    plan = load_plan(cwd=tmp_path, environ=environ)
    assert [source.type for source in plan.sources] == ["postgres", "mysql", "sqlite", "files"]
    assert plan.targets.rpo.total_seconds() == 24 * 3600
    assert plan.destinations[0].password_env == "SAFEHOLD_PASSWORD"


@pytest.mark.parametrize(
    ("text", "slug"), [("My App", "my-app"), ("shop_v2", "shop-v2"), ("---", "app"), ("ok", "ok")]
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_bucket_and_secret_files_become_active_sources(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"SECRET_KEY={PASSWORD}\nAWS_STORAGE_BUCKET_NAME=shop-media\n"
        "AWS_S3_ENDPOINT_URL=https://minio.internal\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\n"
        f"AWS_SECRET_ACCESS_KEY={PASSWORD}-s3\nAWS_S3_REGION_NAME=eu-central-1\n"
    )
    for name in (".env.production", "config/master.key", "certs/site.pem", "ssl/site.key",
                 "certs/readme.txt"):  # fmt: skip
        touch(tmp_path / name)
    detected = detect(tmp_path, {"S3_BUCKET": "ignored-second-choice"})
    (bucket,) = detected.buckets
    assert bucket.variable == "AWS_STORAGE_BUCKET_NAME"
    assert bucket.endpoint_variable == "AWS_S3_ENDPOINT_URL"
    assert bucket.key_variables == ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    assert bucket.region_variable == "AWS_S3_REGION_NAME"
    assert detected.secret_files == [
        ".env",
        ".env.production",
        "config/master.key",
        "certs/site.pem",
        "ssl/site.key",
    ]
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = render_starter_plan(tmp_path.name, "prod", detected, "backups", age_recipient=recipient)
    (tmp_path / "safehold.toml").write_text(text)
    plan = load_plan(cwd=tmp_path, environ={})
    assert [source.type for source in plan.sources] == ["bucket", "secrets"]
    uploads, secrets = plan.sources
    assert isinstance(uploads, BucketConfig) and isinstance(secrets, SecretsConfig)
    assert uploads.url == "s3:https://minio.internal/shop-media"
    assert uploads.access_key_id == "AKIAEXAMPLE" and uploads.region == "eu-central-1"
    assert 'url = "s3:${AWS_S3_ENDPOINT_URL}/${AWS_STORAGE_BUCKET_NAME}"' in text
    assert 'secret_access_key = "${AWS_SECRET_ACCESS_KEY}"' in text
    assert secrets.files[:3] == [".env", ".env.production", "config/master.key"]
    assert secrets.recipients == [recipient]
    assert str(identity) not in text and "AGE-SECRET-KEY-1…" in text  # named, never written
    assert "--identity FILE" in text and "password manager" in text
    assert "parallel branch" not in text and "Commented out" not in text
    assert PASSWORD not in text and "shop-media" not in text and "AKIAEXAMPLE" not in text
    described = "\n".join(describe_plan(plan))
    assert PASSWORD not in described and "AKIAEXAMPLE" not in described


def test_without_a_recipient_the_secrets_block_waits_commented(tmp_path: Path) -> None:
    touch(tmp_path / "config" / "master.key")
    text, plan = write_and_load(tmp_path, {})
    assert [source.name for source in plan.sources] == ["data"]  # only the placeholder
    assert "# Commented out: put your age public key in recipients." in text
    assert '# type = "secrets"' in text


def test_a_bucket_without_an_endpoint_or_keys_is_on_aws_with_the_default_chain(
    tmp_path: Path,
) -> None:
    text, plan = write_and_load(tmp_path, {"AWS_S3_BUCKET": "bkt"})
    assert 'url = "s3:https://s3.amazonaws.com/${AWS_S3_BUCKET}"' in text
    assert '# access_key_id = "${AWS_ACCESS_KEY_ID}"' in text  # boto3's chain signs in
    (bucket,) = plan.sources
    assert isinstance(bucket, BucketConfig) and bucket.access_key_id is None
    assert bucket.url == "s3:https://s3.amazonaws.com/bkt"


def test_repository_placement_warnings(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    inside = repository_warning(app, Path("backups/repository"))
    assert inside is not None and "inside the app folder" in inside and "offsite" in inside
    same = repository_warning(app, tmp_path / "elsewhere" / "repo")  # same tmp filesystem
    assert same is not None and "same disk" in same
    other = Path("/dev/shm")  # a tmpfs: another st_dev than the test's temp folder
    if other.is_dir() and other.stat().st_dev != app.stat().st_dev:
        assert repository_warning(app, other / "safehold-test-repo") is None
