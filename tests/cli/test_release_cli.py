"""The release ledger and rollback with a real Django project on a real PostgreSQL.

Release v1 creates the table, v2 adds a column (code rollback safe), v3 drops a column: the
lint stops the deploy script (exit 4) after a pre-migration snapshot, the ledger marks v3 not
reversible by code, and rollback refuses the code-only path, shows the data path, and runs it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import TEST_PASSWORD, RunCli
from tests.receivers import HttpReceiver
from tests.servers import PostgresServer

MODELS_V1 = """
from django.db import models

class Order(models.Model):
    title = models.CharField(max_length=100)
    note = models.TextField(null=True)
"""
MODELS_V2 = MODELS_V1 + "    region = models.CharField(max_length=2, null=True)\n"
MODELS_V3 = MODELS_V2.replace("    note = models.TextField(null=True)\n", "")

SETTINGS = """
import os
from urllib.parse import unquote, urlsplit
url = urlsplit(os.environ["APP_DB_URL"])
SECRET_KEY = "test"
INSTALLED_APPS = ["shop"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
    "USER": unquote(url.username), "PASSWORD": unquote(url.password),
    "HOST": url.hostname, "PORT": url.port,
}}
"""


class DjangoApp:
    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        (root / "shop" / "migrations").mkdir(parents=True)
        (root / "shop" / "__init__.py").write_text("")
        (root / "shop" / "migrations" / "__init__.py").write_text("")
        (root / "settings.py").write_text(SETTINGS)
        self.env = {**os.environ, "APP_DB_URL": db_url, "DJANGO_SETTINGS_MODULE": "settings",
                    "PYTHONPATH": str(root)}  # fmt: skip

    def models(self, text: str) -> None:
        (self.root / "shop" / "models.py").write_text(text)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "django", *args], cwd=self.root, env=self.env,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def release(self, name: str, models: str, out: Path) -> Path:
        """makemigrations for `models` and write the SQL the migration will run into `out`."""
        self.models(models)
        self.manage("makemigrations", "shop", "--name", name)
        migration = sorted(p.stem for p in (self.root / "shop" / "migrations").glob("0*.py"))[-1]
        sql = out / f"{migration}.sql"
        sql.write_text(self.manage("sqlmigrate", "shop", migration))
        return sql


def _plan(app: Path, rollback_log: Path, extra: str = "") -> Path:
    plan = app / "safehold.toml"
    plan.write_text(
        f"""
app = "shop"
env = "prod"
[owners]
rollback = ["deployer"]
[targets]
rpo = "1h"
rto = "15m"
[[sources]]
name = "db"
type = "postgres"
url = "${{APP_DB_URL}}"
globals = false
[[destinations]]
name = "local"
repository = "backups"
[release]
keep = 2
rollback_command = "echo rolled back to {{release}} at {{git_sha}} >> {rollback_log}"
{extra}
"""
    )
    return plan


def _run(run_cli: RunCli, plan: Path, env: dict[str, str], *args: str, code: int = 0) -> str:
    result = run_cli("--plan", str(plan), *args, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    return result.stdout


@pytest.fixture
def shop(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[tuple[DjangoApp, str]]:
    name = f"shop_{os.getpid()}_{abs(hash(tmp_path)) % 100000}"
    postgres_server.create_database(name)
    url = postgres_server.url(name)
    yield DjangoApp(tmp_path / "django", url), url
    postgres_server.drop_database(name)


def test_release_ledger_rollback_safe_then_unsafe_with_the_data_path(
    tmp_path: Path, run_cli: RunCli, shop: tuple[DjangoApp, str], postgres_server: PostgresServer
) -> None:
    django, url = shop
    app = tmp_path / "app"
    app.mkdir()
    log = tmp_path / "rollback.log"
    plan = _plan(app, log)
    env = {"APP_DB_URL": url, "SAFEHOLD_USER": "deployer"}
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()

    first = django.release("initial", MODELS_V1, sql_dir)
    _run(run_cli, plan, env, "init")
    _run(run_cli, plan, env, "release", "start", "--id", "v1", "--git-sha", "aaa111", "--lint",
         str(first))  # fmt: skip
    django.manage("migrate", "shop")
    with postgres_server.connect(url.rsplit("/", 1)[1]) as conn:
        conn.execute("INSERT INTO shop_order (title, note) SELECT 'order ' || i, 'note ' || i "
                     "FROM generate_series(1, 40) i")  # fmt: skip
    _run(run_cli, plan, env, "release", "finish", "--id", "v1")

    # v2 adds a nullable column: the lint passes and code rollback is safe.
    second = django.release("region", MODELS_V2, sql_dir)
    started = _run(run_cli, plan, env, "release", "start", "--id", "v2", "--git-sha", "bbb222",
                   "--lint", str(second))  # fmt: skip
    assert "lint: no change without a way back in 1 file(s)" in started
    django.manage("migrate", "shop")
    finished = _run(run_cli, plan, env, "release", "finish", "--id", "v2")
    assert "migrations applied: shop:0002_region" in finished
    assert "columns added: shop_order.region" in finished
    assert "reversible by code rollback: yes (additive)" in finished
    safe = _run(run_cli, plan, env, "rollback", "--dry-run")
    assert "rollback: v2 -> v1" in safe and "code rollback alone is safe" in safe
    assert f"echo rolled back to v1 at aaa111 >> {log}" in safe

    # v3 drops a column: the deploy script is stopped (exit 4) after a pre-migration snapshot.
    third = django.release("drop_note", MODELS_V3, sql_dir)
    stopped = _run(run_cli, plan, env, "release", "start", "--id", "v3", "--git-sha", "ccc333",
                   "--lint", str(third), code=4)  # fmt: skip
    assert "drop-column: DROP COLUMN shop_order.note" in stopped
    assert "premigration" in stopped
    assert "the snapshot of release v1 is no longer held (keep = 2)" in stopped
    django.manage("migrate", "shop")  # the deployer went ahead anyway
    _run(run_cli, plan, env, "release", "finish", "--id", "v3")

    ledger = json.loads(_run(run_cli, plan, env, "releases", "--json"))
    assert [r["id"] for r in ledger] == ["v1", "v2", "v3"]
    assert [r["reversible_by_code_rollback"] for r in ledger] == [True, True, False]
    assert ledger[2]["why"] == "column shop_order.note was dropped"
    assert ledger[2]["migrations_applied"] == ["shop:0003_drop_note"]
    assert ledger[2]["lint"][0]["rule"] == "drop-column"
    assert "premigration" in ledger[2]["snapshot_name"]
    held = json.loads(_run(run_cli, plan, env, "holds", "--json"))
    assert sorted(h["why"] for h in held) == ["release v2: pre-deploy snapshot",
                                             "release v3: pre-deploy snapshot"]  # fmt: skip

    flagged = _run(run_cli, plan, env, "rollback", "--dry-run", code=4)
    assert "rollback: v3 -> v2" in flagged
    assert "code rollback alone is NOT safe: column shop_order.note was dropped" in flagged
    v3_snapshot = ledger[2]["snapshot_name"]
    assert f'1. safehold restore {v3_snapshot} --source db --into "$SIDE_DATABASE_URL"' in flagged
    assert "python manage.py migrate shop 0002_region" in flagged
    assert f"safehold db recover {v3_snapshot} --source db --table shop_order --changed restore" \
        in flagged  # fmt: skip
    refused = run_cli("--plan", str(plan), "rollback", "--yes", env=env)
    assert refused.returncode == 4
    assert "error: rolling the code back to v2 alone is not safe" in refused.stderr
    assert not log.exists()

    # Someone not in [owners] rollback is refused.
    stranger = run_cli("--plan", str(plan), "rollback", "--yes", "--force",
                       env={**env, "SAFEHOLD_USER": "mallory"})  # fmt: skip
    assert stranger.returncode == 1 and "mallory may not roll back" in stranger.stderr

    # The data path: restore beside production, roll the code and schema back, copy back.
    side = f"side_{os.getpid()}"
    postgres_server.create_database(side)
    try:
        side_url = postgres_server.url(side)
        _run(run_cli, plan, env, "restore", v3_snapshot, "--source", "db", "--into", side_url)
        with postgres_server.connect(side) as conn:
            count = conn.execute("SELECT count(*) FROM shop_order WHERE note LIKE 'note %'")
            assert count.fetchone()[0] == 40
        rolled = _run(run_cli, plan, env, "rollback", "--yes", "--force")
        assert "rolled back to v2; recorded in the ledger" in rolled
        assert log.read_text() == "rolled back to v2 at bbb222\n"
        django.models(MODELS_V2)
        django.manage("migrate", "shop", "0002_region")
        with postgres_server.connect(url.rsplit("/", 1)[1]) as conn:
            nulls = conn.execute("SELECT count(*) FROM shop_order WHERE note IS NULL")
            assert nulls.fetchone()[0] == 40  # the column is back, its values are not yet
        # The last step of the data path: the lost values come back from the snapshot.
        preview = _run(run_cli, plan, env, "db", "recover", v3_snapshot, "--source", "db",
                       "--table", "shop_order", "--changed", "restore", "--dry-run")  # fmt: skip
        assert "UPDATE" in preview
        with postgres_server.connect(url.rsplit("/", 1)[1]) as conn:
            still = conn.execute("SELECT count(*) FROM shop_order WHERE note IS NULL")
            assert still.fetchone()[0] == 40  # --dry-run wrote nothing
        _run(run_cli, plan, env, "db", "recover", v3_snapshot, "--source", "db",
             "--table", "shop_order", "--changed", "restore", "--yes")  # fmt: skip
        with postgres_server.connect(url.rsplit("/", 1)[1]) as conn:
            back = conn.execute("SELECT count(*) FROM shop_order WHERE note LIKE 'note %'")
            assert back.fetchone()[0] == 40
            total = conn.execute("SELECT count(*) FROM shop_order")
            assert total.fetchone()[0] == 40
    finally:
        postgres_server.drop_database(side)

    after = json.loads(_run(run_cli, plan, env, "releases", "--json"))
    assert after[2]["rolled_back"] is not None and after[1]["rolled_back"] is None


class _Health:
    def __init__(self) -> None:
        self.status = 200
        holder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(holder.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"


def test_release_watch_alerts_when_a_signal_goes_bad(
    tmp_path: Path, run_cli: RunCli, http_receiver: HttpReceiver
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    database = app / "app.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS errors (id INTEGER)")
    health = _Health()
    plan = app / "safehold.toml"
    plan.write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1h"
rto = "15m"
[[sources]]
name = "db"
type = "sqlite"
path = "app.sqlite3"
[[destinations]]
name = "local"
repository = "backups"
[[alerts.channels]]
name = "hook"
url = "{http_receiver.url()}"
[release]
rollback_command = "true"
[[release.signals]]
name = "health"
type = "http"
url = "{health.url}"
[[release.signals]]
name = "errors"
type = "sql"
query = "SELECT count(*) FROM errors"
max = 3
"""
    )
    env: dict[str, str] = {}
    _run(run_cli, plan, env, "init")
    _run(run_cli, plan, env, "release", "start", "--id", "v7")
    good = _run(run_cli, plan, env, "release", "watch", "--for", "2s", "--every", "1s")
    assert "ok  health:" in good and "release v7: every signal stayed good" in good
    assert http_receiver.drain() == []

    with sqlite3.connect(database) as conn:
        conn.executemany("INSERT INTO errors VALUES (?)", [(i,) for i in range(5)])
    health.status = 503
    result = run_cli("--plan", str(plan), "release", "watch", "--for", "30s", "--every", "1s")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BAD health:" in result.stdout
    assert "error: release v7: health went bad:" in result.stderr
    assert "answered 503, expected 200" in result.stderr
    [alert] = [request.json() for request in http_receiver.drain()]
    assert "release v7: health went bad" in alert["title"]
    assert "safehold rollback" in alert["message"]
    health.server.shutdown()
