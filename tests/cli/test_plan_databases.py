"""A new user's plan for an app with a real database plus uploads: one backup command, one
restore command per source into a new place, production refused, then forced with evidence."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PASSWORD, RunCli


def _plan(app: Path, kind: str, url_variable: str) -> None:
    (app / "uploads").mkdir(parents=True, exist_ok=True)
    (app / "uploads" / "logo.png").write_bytes(bytes(range(256)) * 64)
    (app / "safehold.toml").write_text(
        f"""
app = "shop"
env = "prod"
[targets]
rpo = "1h"
rto = "15m"
[[sources]]
name = "db"
type = "{kind}"
url = "${{{url_variable}}}"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "local"
repository = "backups"
"""
    )


def _ok(result: subprocess.CompletedProcess[str], secret: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    assert secret not in output
    return output


def _scenario(
    tmp_path: Path, run_cli: RunCli, kind: str, url: str, new_url: str, password: str,
    count: Any, delete_some: Any,
) -> None:  # fmt: skip
    app = tmp_path / "shop"
    _plan(app, kind, "APP_DB_URL")
    env = {"APP_DB_URL": url}
    plan = ["--plan", str(app / "safehold.toml")]

    _ok(run_cli(*plan, "init", env=env), password)
    output = _ok(run_cli(*plan, "backup", "--reason", "daily", env=env), password)
    assert re.search(r"ok\s+db \(" + kind, output) and "ok      uploads" in output

    restored = _ok(run_cli(*plan, "restore", "latest", "--source", "db", "--into", new_url,
                           env=env), password)  # fmt: skip
    assert "orders: 300 rows (matches backup)" in restored
    assert count("shop_restored") == 300
    files = tmp_path / "restored-files"
    _ok(run_cli(*plan, "restore", "latest", "--source", "uploads", "--into", str(files),
                env=env), password)  # fmt: skip
    assert (files / "uploads" / "logo.png").read_bytes() == (
        app / "uploads" / "logo.png"
    ).read_bytes()

    delete_some()
    refused = run_cli(*plan, "restore", "latest", "--source", "db", "--into", url, env=env)
    assert refused.returncode == 1 and password not in refused.stderr
    assert "production location" in refused.stderr
    assert count("shop") == 100

    forced = _ok(run_cli(*plan, "restore", "latest", "--source", "db", "--into", url,
                         "--to-production", "--yes", env=env), password)  # fmt: skip
    assert "evidence snapshot" in forced
    assert count("shop") == 300


def test_postgres_plan_end_to_end(tmp_path: Path, run_cli: RunCli, postgres_server: Any) -> None:
    server = postgres_server
    server.create_database("shop")
    server.psql("CREATE TABLE orders (id serial PRIMARY KEY, note text)", db="shop")
    server.psql("INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 300) g",
                db="shop")  # fmt: skip

    def count(db: str) -> int:
        return int(server.psql("SELECT count(*) FROM orders", db=db).strip())

    url = server.url("shop")
    password = url.split(":")[2].split("@")[0]
    try:

        def delete_some() -> None:
            server.psql("DELETE FROM orders WHERE id > 100", db="shop")

        _scenario(tmp_path, run_cli, "postgres", url, server.url("shop_restored"), password,
                  count, delete_some)  # fmt: skip
    finally:
        for name in ("shop", "shop_restored"):
            server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_mariadb_plan_end_to_end(tmp_path: Path, run_cli: RunCli, mariadb_server: Any) -> None:
    server = mariadb_server
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT)", db="shop")
    server.sql("INSERT INTO orders (note) SELECT CONCAT('order ', seq) FROM seq_1_to_300",
               db="shop")  # fmt: skip

    def count(db: str) -> int:
        return int(server.sql("SELECT count(*) FROM orders", db=db).strip().splitlines()[-1])

    url = server.url("shop")
    password = url.split(":")[2].split("@")[0]
    try:

        def delete_some() -> None:
            server.sql("DELETE FROM orders WHERE id > 100", db="shop")

        _scenario(tmp_path, run_cli, "mysql", url, server.url("shop_restored"), password,
                  count, delete_some)  # fmt: skip
    finally:
        server.sql("DROP DATABASE IF EXISTS shop")
        server.sql("DROP DATABASE IF EXISTS shop_restored")


pytestmark = pytest.mark.slow
