#!/usr/bin/env python3
"""Benchmark `safehold db diff` and `safehold db recover` against recovering deleted rows by
hand, on the PostgreSQL benchmark database of bench/pg_bench.py.

One run: start a private PostgreSQL 15 server and generate the "small SaaS" database
(pg_bench.py's generator: users, orders, order_items, events), `safehold init` and a plan
backup. Then delete 5% of the rows: 5% of `orders` (their `order_items` cascade) and 5% of
`events`, chosen by a hash of the id so that the same rows can be deleted again. Then:

1. `safehold db diff latest --source db --json` (timed): must report exactly the deleted
   rows as missing and nothing added or changed;
2. `safehold db recover latest --source db --yes --json` (timed; it includes its own diff
   and the held evidence snapshot it takes first): afterwards every table has its backup
   row count again;
3. the same rows deleted again, then by hand: `safehold restore latest --source db --into
   postgresql://…/restored` (the snapshot into a new database), then, over postgres_fdw,
   `INSERT INTO t SELECT * FROM snap.t s WHERE NOT EXISTS (SELECT 1 FROM t WHERE id = s.id)`
   for each table in foreign-key order, in one transaction, and the identity sequences
   moved past the restored ids (both timed, apart and together). Every table must have
   its backup row count again.

`--baseline CMD`: after 2, the same rows deleted again and 1 and 2 run with another
safehold command (say, a checkout before a change), so that before and after are measured
in the same run on a shared machine.

Prints a Markdown table and writes every number to `--out` (JSON). `--smoke`: a 20 MB
database and a 120 s timeout per command, to check that it runs (bench smoke runs:
scripts/test-all.sh). Full size (`--size-mb 1200`, about 1 GB on disk) takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg_bench as pgb
from run import MB, BenchError, say

TABLES = ("users", "orders", "order_items", "events")  # foreign-key order
DELETE_WHERE = "abs(hashint8(id)) % 20 = 0"  # 5% of the rows, the same ones each time
SMOKE_SIZE_MB = 20.0
# the text output of db diff and db recover (their progress lines, on stderr, are timed)
DIFF_LINE = re.compile(r"^  (\S+): ([\d,]+) missing, ([\d,]+) added, ", re.MULTILINE)
DIFF_TOTAL = re.compile(r"^total: ([\d,]+) missing, ([\d,]+) added, ([\d,]+) changed", re.MULTILINE)
RECOVER_LINE = re.compile(r"written in one transaction: ([\d,]+) inserted")


def delete_five_percent(server: pgb.PgServer) -> dict[str, int]:
    """Delete 5% of orders (items cascade) and of events; returns the counts left."""
    server.psql(
        f"BEGIN; DELETE FROM orders WHERE {DELETE_WHERE}; "
        f"DELETE FROM events WHERE {DELETE_WHERE}; COMMIT;",
        db=pgb.DB,
    )
    return server.row_counts(pgb.DB)


def by_hand_sql(server: pgb.PgServer, restored: str) -> str:
    """The by-hand copy-back: the restored database as a foreign schema, then the missing
    rows of each table inserted, in foreign-key order, in one transaction."""
    inserts = "".join(
        f"INSERT INTO public.{t} SELECT * FROM snap.{t} s "
        f"WHERE NOT EXISTS (SELECT 1 FROM public.{t} l WHERE l.id = s.id);\n"
        f"SELECT setval(pg_get_serial_sequence('public.{t}', 'id'), "
        f"(SELECT max(id) FROM public.{t}));\n"
        for t in TABLES
    )
    return f"""
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
DROP SERVER IF EXISTS snap CASCADE;
CREATE SERVER snap FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host '{server.host}', port '{server.port}', dbname '{restored}',
             fetch_size '10000');
CREATE USER MAPPING FOR CURRENT_USER SERVER snap
    OPTIONS (user '{pgb.DB_USER}', password '{pgb.DB_PASSWORD}');
DROP SCHEMA IF EXISTS snap CASCADE;
CREATE SCHEMA snap;
IMPORT FOREIGN SCHEMA public LIMIT TO ({", ".join(TABLES)}) FROM SERVER snap INTO snap;
BEGIN;
{inserts}COMMIT;
DROP SCHEMA snap CASCADE;
DROP SERVER snap CASCADE;
"""


class Run:
    def __init__(self, run_dir: Path, server: pgb.PgServer, safehold: list[str], timeout: float):
        self.dir = run_dir
        self.server = server
        self.safehold = safehold
        self.timeout = timeout
        self.plan = run_dir / "plan" / "safehold.toml"
        self.plan.parent.mkdir(parents=True)
        self.plan.write_text(pgb.plan_text(run_dir / "repo", 4))
        home = run_dir / "home"
        home.mkdir()
        self.env = pgb.clean_env(pgb.harness.Safehold(safehold).env(home))
        self.env["BENCH_DB_URL"] = server.url(pgb.DB)
        self.env["TMPDIR"] = str(run_dir / "tmp")
        (run_dir / "tmp").mkdir()
        self.seconds: dict[str, float] = {}
        self.steps: dict[str, list[tuple[float, str]]] = {}
        self.facts: dict[str, Any] = {}

    def cli(self, phase: str, *args: str, command: Sequence[str] | None = None) -> str:
        """Run one safehold command (`command`: another safehold, e.g. the one before a
        change), timed; its progress lines (stderr) are kept with the second each arrived,
        in `self.steps[phase]`."""
        argv = [*(command or self.safehold), "--plan", str(self.plan), *args]
        self.server.settle()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.dir)  # fmt: skip
        steps: list[tuple[float, str]] = []
        err: list[str] = []

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                steps.append((round(time.perf_counter() - started, 2), line.rstrip()))
                err.append(line)

        out_parts: list[str] = []

        def read_stdout() -> None:
            assert proc.stdout is not None
            out_parts.append(proc.stdout.read())

        # stderr is read by its own thread only (communicate() would read it too and take
        # some of the progress lines away from the timing)
        readers = [threading.Thread(target=f, daemon=True) for f in (read_stderr, read_stdout)]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError(f"{phase}: timed out after {self.timeout:.0f} s") from None
        for reader in readers:
            reader.join()
        out = "".join(out_parts)
        self.seconds[phase] = round(time.perf_counter() - started, 2)
        self.steps[phase] = steps
        if proc.returncode not in (0, 3):
            raise BenchError(f"{phase}: exit {proc.returncode}: {''.join(err).strip()[-1500:]}")
        say(f"  {phase}: {self.seconds[phase]:.1f} s")
        return out

    def diff_and_recover(
        self, label: str, before: dict[str, int], deleted: dict[str, int],
        command: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        """`db diff` (must name exactly the deleted rows) then `db recover --yes` (every table
        has its backup row count again), timed as "db diff{label}" and "db recover{label}"."""
        server = self.server
        text = self.cli(f"db diff{label}", "db", "diff", "latest", "--source", "db",
                        command=command)  # fmt: skip
        missing = {m[1]: int(m[2].replace(",", "")) for m in DIFF_LINE.finditer(text)}
        total = DIFF_TOTAL.search(text)
        if missing != deleted or total is None or total.group(2) != "0" or total.group(3) != "0":
            raise BenchError(f"db diff{label} found {missing} ({total and total.group(0)}); "
                             f"deleted {deleted}")  # fmt: skip
        text = self.cli(f"db recover{label}", "db", "recover", "latest", "--source", "db",
                        "--yes", command=command)  # fmt: skip
        if server.row_counts(pgb.DB) != before:
            raise BenchError(f"after db recover{label}: {server.row_counts(pgb.DB)} != {before}")
        written = RECOVER_LINE.search(text)
        self.facts[f"recovered_rows{label}"] = (
            int(written.group(1).replace(",", "")) if written else None
        )

    def run(self, size_mb: float, baseline: Sequence[str] | None = None) -> None:
        server = self.server
        server.start()
        server.psql(f"CREATE DATABASE {pgb.DB}")
        say(f"generating a {size_mb:.0f} MB database")
        pgb.generate_shop(server, int(size_mb * MB), 1, self.timeout)
        server.psql("VACUUM ANALYZE", db=pgb.DB)
        before = server.row_counts(pgb.DB)
        self.facts.update(database_bytes=server.database_size(pgb.DB), rows=before)
        self.cli("init", "init")
        self.cli("backup", "backup", "--quiet")

        after = delete_five_percent(server)
        deleted = {t: before[t] - after[t] for t in before}
        self.facts["deleted"] = deleted
        say(f"deleted {sum(deleted.values()):,} rows ({deleted})")

        self.diff_and_recover("", before, deleted)
        if baseline:  # the same, with the safehold before a change, in the same run
            delete_five_percent(server)
            self.diff_and_recover(" (baseline)", before, deleted, command=baseline)

        delete_five_percent(server)
        restored = "restored"
        self.cli("by hand: restore into a new database", "restore", "latest", "--source",
                 "db", "--into", server.url(restored), "--quiet")  # fmt: skip
        server.settle()
        started = time.perf_counter()
        server.psql(by_hand_sql(server, restored), db=pgb.DB, timeout=self.timeout)
        phase = "by hand: INSERT ... WHERE NOT EXISTS over postgres_fdw"
        self.seconds[phase] = round(time.perf_counter() - started, 2)
        say(f"  {phase}: {self.seconds[phase]:.1f} s")
        if server.row_counts(pgb.DB) != before:
            raise BenchError(f"after the by-hand copy: {server.row_counts(pgb.DB)} != {before}")


def markdown(seconds: dict[str, float], facts: dict[str, Any], meta: dict[str, Any]) -> str:
    by_hand = sum(v for k, v in seconds.items() if k.startswith("by hand"))
    rows = [
        "| step | seconds |",
        "| --- | ---: |",
        f"| `safehold db diff` | {seconds['db diff']:.1f} |",
        f"| `safehold db recover --yes` (diff + evidence snapshot + copy-back) | "
        f"{seconds['db recover']:.1f} |",
    ]
    if "db diff (baseline)" in seconds:
        rows += [
            f"| baseline `safehold db diff` | {seconds['db diff (baseline)']:.1f} |",
            f"| baseline `safehold db recover --yes` | {seconds['db recover (baseline)']:.1f} |",
        ]
    rows += [f"| {k} | {v:.1f} |" for k, v in seconds.items() if k.startswith("by hand")]
    rows.append(f"| by hand, total | {by_hand:.1f} |")
    for phase in ("db diff", "db recover", "db diff (baseline)", "db recover (baseline)"):
        steps = facts.get("steps", {}).get(phase) or []
        if steps:
            rows.append("")
            rows.append(f"`{phase}` progress (second each line appeared):")
            rows += [f"    {at:7.1f}  {line}" for at, line in steps]
    deleted = sum(facts["deleted"].values())
    return (
        f"database: {facts['database_bytes'] / MB:.0f} MB, "
        f"{sum(facts['rows'].values()):,} rows; deleted {deleted:,} rows (5% of orders with "
        f"their items, 5% of events); backup {seconds['backup']:.1f} s; "
        f"{meta['host']}, {meta['cpus']} CPUs\n\n" + "\n".join(rows)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=1200.0,
                        help="database size to generate (default 1200: ~1 GB on disk)")  # fmt: skip
    parser.add_argument("--safehold", default=str(pgb.DEFAULT_SAFEHOLD), metavar="CMD")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per command")
    parser.add_argument("--out", type=Path, default=Path("dbdiff-results.json"))
    parser.add_argument("--baseline", metavar="CMD",
                        help="also time db diff and db recover with this safehold command "
                        "(e.g. the version before a change), in the same run")  # fmt: skip
    parser.add_argument("--smoke", action="store_true",
                        help="20 MB, 120 s per command: check that it runs")  # fmt: skip
    args = parser.parse_args(argv)
    size = SMOKE_SIZE_MB if args.smoke else args.size_mb
    timeout = args.timeout or (120.0 if args.smoke else 3600.0)
    safehold = shlex.split(args.safehold)
    bin_dir = pgb.pg_bin_dir()
    if bin_dir is None or not (shutil.which(safehold[0]) or os.access(safehold[0], os.X_OK)):
        say("not found: PostgreSQL server binaries or safehold (see --safehold)")
        return 2
    run_dir = Path(tempfile.mkdtemp(prefix="safehold-dbdiff-bench-"))
    run_dir.chmod(0o755)  # the postgres user must reach the server's directory
    server = pgb.PgServer(run_dir / "pg", bin_dir, pgb.free_port())
    bench = Run(run_dir, server, safehold, timeout)
    meta = {"host": platform.node(), "cpus": os.cpu_count(), "size_mb": size,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    try:
        bench.run(size, shlex.split(args.baseline) if args.baseline else None)
    except BenchError as err:
        say(f"FAILED: {err}")
        return 1
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    bench.facts["steps"] = bench.steps
    args.out.write_text(json.dumps({"meta": meta, "seconds": bench.seconds,
                                    "facts": bench.facts}, indent=2))  # fmt: skip
    print(markdown(bench.seconds, bench.facts, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
