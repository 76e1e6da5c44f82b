"""Incident mode through the real CLI: `incident start` runs the freeze command, takes a held
evidence snapshot of every source, pauses scheduled prune and prints the scope (rows now
against the last good backup per table, files removed/added/changed); `incident status`
shows the timeline of what ran; `incident end` runs unfreeze, resumes prune and writes the
incident record into the repository; the runbook's incident page lists it. On SQLite and
files, and on a real PostgreSQL server."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import TEST_PASSWORD, RunCli

PLAN = """
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "1h"
[[sources]]
name = "db"
type = "{kind}"
{where}
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "local"
repository = "backups"
[retention]
keep_last = 1
[incident]
freeze = "touch frozen.marker"
unfreeze = "rm frozen.marker && touch unfrozen.marker"
"""


def _app(tmp_path: Path, kind: str, where: str) -> Path:
    app = tmp_path / "shop"
    (app / "uploads").mkdir(parents=True)
    for number in range(1, 6):
        (app / "uploads" / f"u{number}.png").write_bytes(bytes([number]) * 2000)
    (app / "safehold.toml").write_text(PLAN.format(kind=kind, where=where))
    return app


def _cli(run_cli: RunCli, app: Path, *args: str, env: dict[str, str] | None = None,
         expect: int = 0) -> str:  # fmt: skip
    result: subprocess.CompletedProcess[str] = run_cli(
        "--plan", str(app / "safehold.toml"), *args, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == expect, output
    assert "Traceback" not in output and TEST_PASSWORD not in output
    return result.stdout if expect == 0 else output


def _fill_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.executemany("INSERT INTO orders (total) VALUES (?)", [(n,) for n in range(100)])
        db.executemany("INSERT INTO users (email) VALUES (?)", [(f"u{n}",) for n in range(20)])


def test_incident_start_status_end_with_sqlite_and_files(tmp_path: Path, run_cli: RunCli) -> None:
    app = _app(tmp_path, "sqlite", 'path = "app.sqlite3"')
    _fill_sqlite(app / "app.sqlite3")
    _cli(run_cli, app, "init")
    described = _cli(run_cli, app, "plan", "check")
    assert "incident: start runs `touch frozen.marker`, end runs `rm frozen.marker" in described
    _cli(run_cli, app, "backup", "--reason", "daily")
    daily = json.loads(_cli(run_cli, app, "snapshots", "--json"))[-1]

    # the bad deploy: 30 orders gone, 4 users signed up, 2 uploads deleted, 1 overwritten
    with sqlite3.connect(app / "app.sqlite3") as db:
        db.execute("DELETE FROM orders WHERE id <= 30")
        db.executemany("INSERT INTO users (email) VALUES (?)", [(f"new{n}",) for n in range(4)])
    (app / "uploads" / "u1.png").unlink()
    (app / "uploads" / "u2.png").unlink()
    (app / "uploads" / "u3.png").write_bytes(b"overwritten by the deploy")
    (app / "uploads" / "fresh.png").write_bytes(b"a real new upload")

    started = json.loads(_cli(run_cli, app, "incident", "start", "--why", "orders gone",
                              "--json"))  # fmt: skip
    assert (app / "frozen.marker").exists()
    assert started["freeze"]["ok"] is True and started["why"] == "orders gone"
    evidence = started["evidence"]
    assert evidence["complete"] is True and evidence["name"]
    scope = {item["source"]: item for item in started["scope"]}
    tables = {t["table"]: (t["live_rows"], t["backup_rows"], t["delta"])
              for t in scope["db"]["tables"]}  # fmt: skip
    assert tables == {"orders": (70, 100, -30), "users": (24, 20, 4)}
    assert scope["db"]["baseline"] == daily["name"]
    assert "safehold db diff" in scope["db"]["note"]
    assert scope["uploads"]["files"] == {"missing": 2, "added": 1, "changed": 1, "newer": 1,
                                         "same": 2}  # fmt: skip
    assert scope["uploads"]["samples"]["missing"] == ["u1.png", "u2.png"]

    # the evidence is held, and neither `latest` nor the scope baseline is the evidence
    holds = json.loads(_cli(run_cli, app, "holds", "--json"))
    assert {h["snapshot"]: h["why"] for h in holds} == {
        evidence["snapshot"]: "evidence snapshot: incident orders gone",
        daily["id"]: "incident baseline: orders gone",  # the backup to recover from
    }
    dry = json.loads(_cli(run_cli, app, "restore", "latest", "--source", "uploads", "--into",
                          str(tmp_path / "x"), "--dry-run", "--json"))  # fmt: skip
    assert dry["snapshot"]["id"] == daily["id"]

    # one incident at a time
    again = _cli(run_cli, app, "incident", "start", expect=1)
    assert "an incident is already open" in again and "incident end" in again

    # scheduled prune is paused (and says so); backups keep running
    skipped = _cli(run_cli, app, "job", "prune")
    assert "not started: scheduled prune is paused: incident open" in skipped
    _cli(run_cli, app, "job", "backup")

    # recover from the last good backup (`latest` now holds the damage: backups went on):
    # only the missing uploads; the overwritten one and the new one stay
    _cli(run_cli, app, "restore", daily["name"], "--source", "uploads", "--into",
         str(app / "uploads"), "--only-missing")  # fmt: skip
    assert (app / "uploads" / "u1.png").read_bytes() == bytes([1]) * 2000
    assert (app / "uploads" / "u3.png").read_bytes() == b"overwritten by the deploy"
    assert (app / "uploads" / "fresh.png").exists()

    status = json.loads(_cli(run_cli, app, "incident", "status", "--json"))
    assert status["open"] is True
    whats = [event["what"] for event in status["timeline"]]
    assert whats[0] == "freeze: touch frozen.marker: ok"
    assert any(w.startswith("evidence snapshot ") and w.endswith("(held)") for w in whats)
    assert any("scheduled prune skipped" in w for w in whats)
    restore_event = next(e for e in status["timeline"] if "--only-missing" in e["what"])
    assert restore_event["what"].startswith("safehold --plan ")
    assert restore_event["exit_code"] == 0
    assert any("restore 2 missing file(s)" in d for d in restore_event["details"])
    assert not any(w.endswith((" holds --json", " snapshots --json")) for w in whats)  # listings
    assert any(w.endswith(" job backup") for w in whats)
    text = _cli(run_cli, app, "incident", "status")
    assert "incident OPEN since" in text and "orders: 70 rows now, 100 in the backup (-30)" in text

    # held snapshots survive forget --prune (keep_last = 1); `latest` is the newest daily
    _cli(run_cli, app, "forget", "--prune", "--force")
    left = json.loads(_cli(run_cli, app, "snapshots", "--json"))
    assert evidence["snapshot"] in {s["id"] for s in left}
    newest_daily = [s for s in left if s["reason"] == "daily" and s["id"] != daily["id"]]
    assert len(newest_daily) == 1 and daily["id"] in {s["id"] for s in left}
    dry = json.loads(_cli(run_cli, app, "restore", "latest", "--source", "db", "--into",
                          str(tmp_path / "x.sqlite3"), "--dry-run", "--json"))  # fmt: skip
    assert dry["snapshot"]["id"] == newest_daily[0]["id"]

    ended = json.loads(_cli(run_cli, app, "incident", "end", "--json"))
    assert not (app / "frozen.marker").exists() and (app / "unfrozen.marker").exists()
    assert ended["open"] is False and ended["ended"]
    assert ended["timeline"][-1]["what"] == "incident ended; scheduled prune resumed"
    assert "no incident is open" in _cli(run_cli, app, "incident", "status")
    last = json.loads(_cli(run_cli, app, "incident", "status", "--json"))["last"]
    assert last["id"] == ended["id"] and last["why"] == "orders gone"
    assert "no incident is open" in _cli(run_cli, app, "incident", "end", expect=1)
    holds = json.loads(_cli(run_cli, app, "holds", "--json"))
    assert [h["snapshot"] for h in holds] == [evidence["snapshot"]]  # baseline hold released
    assert "not started" not in _cli(run_cli, app, "job", "prune")  # prune runs again
    left = {s["id"] for s in json.loads(_cli(run_cli, app, "snapshots", "--json"))}
    assert left == {evidence["snapshot"], newest_daily[0]["id"]}

    # the runbook: the incident page with this plan's commands, and the incident just closed
    _cli(run_cli, app, "runbook")
    runbook = (app / "RUNBOOK.md").read_text()
    assert "## 7. Incident: the first 10 minutes" in runbook
    assert "safehold incident start --why" in runbook
    assert f"safehold restore SNAPSHOT --source uploads --into {app / 'uploads'} --only-missing" \
        in runbook  # fmt: skip
    assert "safehold db diff SNAPSHOT --source db" in runbook
    assert "restic -r" in runbook and "restore SNAPSHOT --target" in runbook
    assert "orders gone" in runbook and "--only-missing" in runbook
    assert "***" not in runbook


def test_incident_scope_and_production_losses_on_postgres(
    tmp_path: Path, run_cli: RunCli, postgres_server: Any
) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    postgres_server.create_database(db)
    postgres_server.psql(
        "CREATE TABLE orders (id serial PRIMARY KEY, total int);"
        "INSERT INTO orders (total) SELECT g FROM generate_series(1, 200) g;"
        "CREATE TABLE users (id serial PRIMARY KEY, email text);"
        "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 50) g;",
        db=db,
    )
    app = _app(tmp_path, "postgres", 'url = "${APP_DB_URL}"')
    env = {"APP_DB_URL": postgres_server.url(db)}
    try:
        _cli(run_cli, app, "init", env=env)
        _cli(run_cli, app, "backup", env=env)
        postgres_server.psql(
            "DELETE FROM orders WHERE id % 10 < 3;"  # 30% gone
            "INSERT INTO users (email) SELECT 'new' || g FROM generate_series(1, 16) g;"
            "CREATE TABLE audit (id int)",
            db=db,
        )
        started = json.loads(_cli(run_cli, app, "incident", "start", "--json", env=env))
        db_scope = next(s for s in started["scope"] if s["source"] == "db")
        tables = {t["table"]: (t["live_rows"], t["backup_rows"]) for t in db_scope["tables"]}
        assert tables == {"public.orders": (140, 200), "public.users": (66, 50),
                          "public.audit": (0, None)}  # fmt: skip
        assert postgres_server.password not in json.dumps(started)
        text = _cli(run_cli, app, "incident", "status", env=env)
        assert "public.orders: 140 rows now, 200 in the backup (-60)" in text
        assert "public.audit: 0 rows now, new since the backup" in text

        # a restore onto production says how many rows written since it would lose
        refused = _cli(run_cli, app, "restore", "latest", "--source", "db", "--into",
                       postgres_server.url(db), "--to-production", env=env, expect=1)  # fmt: skip
        assert "it would lose 16 row(s) written since the backup (public.users +16)" in refused
        assert "safehold db diff" in refused and postgres_server.password not in refused
        err = _cli(run_cli, app, "restore", "latest", "--source", "db", "--into",
                   postgres_server.url(db), "--only-missing", env=env, expect=1)  # fmt: skip
        assert "--only-missing and --changed are for files sources" in err
        assert "safehold db recover" in err
        _cli(run_cli, app, "incident", "end", env=env)
        assert (app / "unfrozen.marker").exists()
    finally:
        postgres_server.drop_database(db)


def test_incident_scope_on_mariadb(tmp_path: Path, run_cli: RunCli, mariadb_server: Any) -> None:
    db = f"shop_{secrets.token_hex(3)}"
    mariadb_server.create_database(db)
    mariadb_server.sql(
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, total INT);"
        "INSERT INTO orders (total) SELECT seq FROM seq_1_to_100;"
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, email TEXT);"
        "INSERT INTO users (email) SELECT CONCAT('u', seq) FROM seq_1_to_10;",
        db=db,
    )
    app = _app(tmp_path, "mysql", 'url = "${APP_DB_URL}"')
    env = {"APP_DB_URL": mariadb_server.url(db)}
    try:
        _cli(run_cli, app, "init", env=env)
        _cli(run_cli, app, "backup", env=env)
        mariadb_server.sql(
            "DELETE FROM orders WHERE id <= 30; INSERT INTO users (email) VALUES ('late')", db=db
        )
        started = json.loads(_cli(run_cli, app, "incident", "start", "--json", env=env))
        db_scope = next(s for s in started["scope"] if s["source"] == "db")
        tables = {t["table"]: (t["live_rows"], t["backup_rows"]) for t in db_scope["tables"]}
        assert tables == {"orders": (70, 100), "users": (11, 10)}
        assert mariadb_server.password not in json.dumps(started)
        ended = json.loads(_cli(run_cli, app, "incident", "end", "--json", env=env))
        assert ended["unfreeze"]["ok"] is True
    finally:
        mariadb_server.drop_database(db)


def test_freeze_runs_even_when_the_repository_cannot_be_opened(
    tmp_path: Path, run_cli: RunCli
) -> None:
    app = _app(tmp_path, "sqlite", 'path = "app.sqlite3"')
    _fill_sqlite(app / "app.sqlite3")
    # no `init`: the repository does not exist
    out = _cli(run_cli, app, "incident", "start", "--why", "disk full", expect=3)
    assert (app / "frozen.marker").exists()  # writes stopped first
    assert "evidence FAILED for repository" in out and "on this machine only" in out
    assert "not started: scheduled prune is paused" in _cli(run_cli, app, "job", "prune")
    status = json.loads(_cli(run_cli, app, "incident", "status", "--json"))
    assert status["open"] is True and status["repository_error"]
    assert "no repository at" in _cli(run_cli, app, "incident", "end", expect=10)
    assert (app / "frozen.marker").exists()  # still open: end needs the repository
    _cli(run_cli, app, "init")
    ended = json.loads(_cli(run_cli, app, "incident", "end", "--json"))
    assert ended["why"] == "disk full" and (app / "unfrozen.marker").exists()
    last = json.loads(_cli(run_cli, app, "incident", "status", "--json"))["last"]
    assert last["id"] == ended["id"] and last["open"] is False
