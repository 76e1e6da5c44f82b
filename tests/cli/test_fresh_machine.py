"""The capstone: everything needed to stand the app back up, through the real CLI.

An app folder with a `.env` (SECRET_KEY, a DATABASE_URL on the real PostgreSQL server, an S3
uploads bucket on the real SeaweedFS with its endpoint and keys) and a `media/` folder.
`init --yes` writes a plan with four sources (postgres, files, bucket, secrets) and shows the
age identity once; `backup` saves all four. Then a second, empty machine gets only the plan
file, the repository and its password, the identity (from the password manager) and the
app's variables, and restores each part into a NEW place, checked, and drills them all."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import safehold
from safehold.sources.secrets import parse_dotenv
from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer
from tests.servers import PostgresServer

SECRET_KEY = "django-insecure-Fr3shMachineS3cret"
UPLOADS = {"avatars/1.png": b"\x89PNG" + bytes(range(200)), "docs/terms.pdf": b"%PDF-1.7 x" * 300}
MEDIA = {"thumbs/a.jpg": b"\xff\xd8" + b"j" * 5000, "readme.txt": b"media root\n"}


def _ok(result: subprocess.CompletedProcess[str], *secrets: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    for secret in secrets:
        assert secret not in output
    return output


def _app(root: Path, postgres: PostgresServer, s3: SeaweedServer, db: str, bucket: str) -> Path:
    app = root / "app"
    for relative, data in MEDIA.items():
        (app / "media" / relative).parent.mkdir(parents=True, exist_ok=True)
        (app / "media" / relative).write_bytes(data)
    (app / ".env").write_text(
        f"SECRET_KEY={SECRET_KEY}\nDATABASE_URL={postgres.url(db)}\n"
        f"AWS_STORAGE_BUCKET_NAME={bucket}\nAWS_S3_ENDPOINT_URL={s3.endpoint}\n"
        f"AWS_ACCESS_KEY_ID={s3.access_key}\nAWS_SECRET_ACCESS_KEY={s3.secret_key}\n"
    )
    postgres.create_database(db)
    postgres.psql("CREATE TABLE orders (id int PRIMARY KEY, total numeric)", db=db)
    postgres.psql("INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 120) g", db=db)
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for key, body in UPLOADS.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return app


def test_a_fresh_machine_stands_the_app_back_up(
    tmp_path: Path, run_cli: RunCli, postgres_server: PostgresServer, s3_server: SeaweedServer
) -> None:
    db, bucket = "shop_fresh", s3_server.bucket_name("uploads")
    app = _app(tmp_path, postgres_server, s3_server, db, bucket)
    secrets = (SECRET_KEY, s3_server.secret_key, postgres_server.password)
    plan = ["--plan", str(app / "safehold.toml")]

    init = run_cli(*plan, "init", "--yes")
    init_output = _ok(init, *secrets)
    found = re.findall(r"AGE-SECRET-KEY-1[0-9A-Z]+", init.stdout)
    assert len(found) == 1, init.stdout  # shown once
    identity = found[0]
    plan_text = (app / "safehold.toml").read_text()
    assert identity not in plan_text
    loaded = safehold.load_plan(app / "safehold.toml", environ={})
    assert [(s.name, s.type) for s in loaded.sources] == [
        ("db", "postgres"), ("media", "files"), ("bucket", "bucket"), ("secrets", "secrets"),
    ]  # fmt: skip
    _ok(run_cli(*plan, "plan", "check"), *secrets)
    backup = _ok(run_cli(*plan, "backup"), *secrets)
    for name in ("db", "media", "bucket", "secrets"):
        assert re.search(rf"ok\s+{name}\b", backup), backup
    assert identity not in init_output.replace(identity, "", 1)  # and nowhere else

    # a second, empty machine: the plan file, the repository (from offsite), the password
    # (environment) and the identity (password manager); the app's variables are NOT there:
    # they come back with the secrets, restored first
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(app / "safehold.toml", fresh / "safehold.toml")
    shutil.copytree(app / "backups" / "repository", fresh / "backups" / "repository")
    key_file = tmp_path / "password-manager" / "age.txt"
    key_file.parent.mkdir()
    key_file.write_text(identity + "\n")
    shutil.rmtree(app)
    again = ["--plan", str(fresh / "safehold.toml")]

    def restore(source: str, into: str, *extra: str) -> str:
        result = run_cli(*again, "restore", "latest", "--source", source, "--into", into, *extra)
        return _ok(result, *secrets)

    without_variables = run_cli(*again, "plan", "check")
    assert without_variables.returncode != 0  # the plan needs the app's variables...
    restore("secrets", str(tmp_path / "secrets-restored"), "--identity", str(key_file))
    restored_env = parse_dotenv((tmp_path / "secrets-restored" / ".env").read_text())
    assert restored_env["SECRET_KEY"] == SECRET_KEY  # ...which come back with the secrets
    shutil.copy(tmp_path / "secrets-restored" / ".env", fresh / ".env")  # beside the plan

    output = restore("db", postgres_server.url("shop_fresh_restored"))
    assert "orders: 120 rows (matches backup)" in output
    assert postgres_server.psql("SELECT count(*), sum(total) FROM orders",
                                db="shop_fresh_restored").strip() == "120|10890.0"  # fmt: skip

    new_bucket = f"{bucket}-restored"
    restore("bucket", f"s3:{s3_server.endpoint}/{new_bucket}")
    client = s3_server.client()
    for key, body in UPLOADS.items():
        assert client.get_object(Bucket=new_bucket, Key=key)["Body"].read() == body

    restore("media", str(tmp_path / "media-restored"))
    for relative, data in MEDIA.items():
        assert (tmp_path / "media-restored" / "media" / relative).read_bytes() == data

    drill = run_cli(*again, "drill", "--identity", str(key_file))
    drill_output = _ok(drill, *secrets)
    assert "secrets of secrets decrypted and verified" in drill_output, drill_output
    for name in ("db", "media", "bucket", "secrets"):
        assert name in drill_output
    assert identity not in drill_output
