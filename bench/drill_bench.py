#!/usr/bin/env python3
"""Benchmark `safehold drill` against doing the same restore by hand.

One run: start a private PostgreSQL 15 server (bench/pg_bench.py's), generate the "small
SaaS" database and an uploads folder (bench/dataset.py's uploads), back both up with a
safehold plan, then:

* **safehold drill**: everything a drill does — open the repository, start a throwaway
  PostgreSQL, restore the database (with the row-count verification), restore the uploads,
  compare every restored file with the snapshot, run one SQL check, tear down — phase by phase
  from the drill record;
* **by hand**: `createdb` + `pg_restore -j 4` of a `pg_dump -Fc` file into a new database on
  the running server, plus `cp -a` of the uploads folder (no verification, no server start):
  the least anyone can do to restore the same data.

Prints a Markdown table and writes the raw numbers to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset
from pg_bench import DB, PgServer, free_port, generate_shop, pg_bin_dir
from run import BenchError, say

REPO_ROOT = Path(__file__).resolve().parent.parent
SAFEHOLD = REPO_ROOT / ".venv" / "bin" / "safehold"
PASSWORD = "drill-bench-password-not-a-secret"


def plan_text(uploads: Path) -> str:
    return f"""app = "bench"
env = "prod"
[targets]
rpo = "24h"
rto = "1h"
[[sources]]
name = "db"
type = "postgres"
url = "${{BENCH_DB_URL}}"
globals = false
[[sources]]
name = "uploads"
type = "files"
paths = ["{uploads}"]
[[destinations]]
name = "local"
repository = "repo"
[[drill.checks]]
type = "sql"
source = "db"
query = "SELECT count(*) FROM users"
min = 1
"""


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"{argv[0]} failed: {(result.stderr or result.stdout)[-2000:]}")
    return time.monotonic() - started


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="database size (MB)")
    parser.add_argument("--uploads", type=int, default=3000, help="number of upload files")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (medians)")
    parser.add_argument(
        "--before-src", type=Path, help="also drill with this source tree (PYTHONPATH), alternating"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--out", type=Path, help="write raw numbers here (JSON)")
    args = parser.parse_args()
    if args.smoke:
        args.size_mb, args.uploads = 20, 150
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise BenchError("PostgreSQL server binaries are not installed")
    work = Path(tempfile.mkdtemp(prefix="safehold-drill-bench-"))
    work.chmod(0o755)
    server = PgServer(work / "pg", bin_dir, free_port())
    try:
        return run(args, work, server)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, server: PgServer) -> int:
    server.start()
    server.psql(f"CREATE DATABASE {DB}")
    say(f"generating a {args.size_mb} MB database and {args.uploads} uploads")
    generate_shop(server, args.size_mb * 1_000_000, seed=1, timeout=3600)
    server.psql("VACUUM ANALYZE", db=DB)
    uploads = work / "uploads"
    uploads.mkdir()
    plan = dataset.plan_uploads(random.Random(5), args.uploads, range(0, 24))
    dataset.write_uploads(uploads, plan)
    db_bytes = int(server.psql(f"SELECT pg_database_size('{DB}')").strip())
    upload_bytes = tree_bytes(uploads)

    app = work / "app"
    app.mkdir()
    (app / "safehold.toml").write_text(plan_text(uploads))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SAFEHOLD_"))}
    env.update(SAFEHOLD_PASSWORD=PASSWORD, BENCH_DB_URL=server.url(DB),
               SAFEHOLD_DRILL_TMPDIR=str(work))  # fmt: skip
    cli = [str(SAFEHOLD), "--plan", str(app / "safehold.toml")]
    timed([*cli, "init"], env)
    say("backup")
    timed([*cli, "backup", "--reason", "manual"], env)
    dump = work / "db.pgdump"
    tools = {**env, **server.client_env()}
    timed([server.tool("pg_dump"), "-Fc", "-f", str(dump), DB], tools)

    def drill(src: str | None) -> tuple[dict[str, object], float]:
        drill_env = dict(env)
        if src:
            drill_env["PYTHONPATH"] = src
        started = time.monotonic()
        result = subprocess.run([*cli, "drill", "--json"], env=drill_env, capture_output=True,
                                text=True, check=False)  # fmt: skip
        wall = time.monotonic() - started
        if result.returncode != 0:
            raise BenchError(f"the drill failed: {result.stdout[-3000:]}{result.stderr[-2000:]}")
        return json.loads(result.stdout), wall

    def by_hand(round_no: int) -> dict[str, float]:
        db, copy = f"hand_restored_{round_no}", work / f"hand-uploads-{round_no}"
        hand = {
            "createdb": timed([server.tool("createdb"), db], tools),
            "pg_restore -j 4": timed(
                [server.tool("pg_restore"), "-j", "4", "--no-owner", "-d", db, str(dump)], tools
            ),
            "cp -a uploads": timed(["cp", "-a", str(uploads), str(copy)], env),
        }
        server.psql(f"DROP DATABASE {db}")
        shutil.rmtree(copy, ignore_errors=True)
        return hand

    def db_restore(src: str | None, name: str) -> float:
        """`safehold restore latest --source db --into` a new database on the same server."""
        restore_env = dict(env)
        if src:
            restore_env["PYTHONPATH"] = src
        seconds = timed([*cli, "restore", "latest", "--source", "db", "--into", server.url(name)],
                        restore_env)  # fmt: skip
        server.psql(f"DROP DATABASE {name}")
        return seconds

    variants = [("after", os.environ.get("PYTHONPATH"))]
    if args.before_src:
        variants.insert(0, ("before", str(args.before_src)))
    runs: dict[str, list[dict[str, object]]] = {name: [] for name, _ in variants}
    hands: list[dict[str, float]] = []
    for round_no in range(args.rounds):  # alternate, so that load changes hit every variant
        for name, src in variants:
            say(f"round {round_no + 1}: drill ({name})")
            record, wall = drill(src)
            restore_s = db_restore(src, f"sh_restored_{name}_{round_no}")
            runs[name].append({"record": record, "wall": wall, "restore_db_s": restore_s})
        say(f"round {round_no + 1}: by hand (pg_restore + cp)")
        hands.append(by_hand(round_no))

    print()
    print(f"database {db_bytes / 1e6:,.0f} MB, uploads {args.uploads:,} files "
          f"{upload_bytes / 1e6:,.0f} MB, {args.rounds} round(s), medians")  # fmt: skip
    print()
    median = statistics.median
    header = " | ".join(f"drill {name} (s)" for name, _ in variants)
    print(f"| step | {header} | by hand (s) |")
    print("|---|" + "---:|" * (len(variants) + 1))

    def phase(name: str, key: str) -> str:
        values = []
        for run_ in runs[name]:
            record = run_["record"]
            assert isinstance(record, dict)
            values.append({p["name"]: p["seconds"] for p in record["phases"]}.get(key, 0.0))
        return f"{median(values):.2f}"

    def cells(key: str) -> str:
        return " | ".join(phase(name, key) for name, _ in variants)

    hand_db = median(h["createdb"] + h["pg_restore -j 4"] for h in hands)
    hand_cp = median(h["cp -a uploads"] for h in hands)
    hand_total = median(sum(h.values()) for h in hands)
    print(f"| open repository, pick snapshot | {cells('fetch')} | – |")
    print(f"| start a throwaway PostgreSQL | {cells('scratch')} | – |")
    print(f"| restore the database | {cells('restore:db')} | {hand_db:.2f} |")
    print(f"| restore the uploads | {cells('restore:uploads')} | {hand_cp:.2f} |")
    print(f"| checks (files vs snapshot, newest row, SQL) | {cells('checks')} | – |")
    print(f"| teardown | {cells('teardown')} | – |")
    rto = " | ".join(
        f"**{median(float(r['record']['rto_measured_s']) for r in runs[name]):.2f}**"  # type: ignore[index]
        for name, _ in variants
    )
    print(f"| **time to restore (RTO)** | {rto} | **{hand_total:.2f}** |")
    walls = " | ".join(f"{median(float(r['wall']) for r in runs[name]):.2f}"  # type: ignore[arg-type]
                       for name, _ in variants)  # fmt: skip
    print(f"| whole command, wall | {walls} | |")
    restores = " | ".join(
        f"{median(float(r['restore_db_s']) for r in runs[name]):.2f}"  # type: ignore[arg-type]
        for name, _ in variants
    )
    print(f"| `safehold restore --source db` vs createdb + pg_restore -j 4 | {restores} | "
          f"{hand_db:.2f} |")  # fmt: skip
    for name, _ in variants:
        db_ratios = [
            float(r["restore_db_s"]) / (h["createdb"] + h["pg_restore -j 4"])  # type: ignore[arg-type]
            for r, h in zip(runs[name], hands, strict=True)
        ]
        print(
            f"safehold restore {name} / (createdb + pg_restore), per round: "
            + ", ".join(f"{x:.2f}x" for x in db_ratios)
            + f" (median {median(db_ratios):.2f}x)"
        )
        ratios = [
            float(r["record"]["rto_measured_s"]) / sum(h.values())  # type: ignore[index]
            for r, h in zip(runs[name], hands, strict=True)
        ]
        print(
            f"drill {name} / by hand, per round: "
            + ", ".join(f"{x:.2f}x" for x in ratios)
            + f" (median {median(ratios):.2f}x)"
        )
    if args.out:
        args.out.write_text(json.dumps({
            "db_bytes": db_bytes, "uploads": args.uploads, "upload_bytes": upload_bytes,
            "drills": runs, "hand": hands,
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
