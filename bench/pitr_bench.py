#!/usr/bin/env python3
"""Restore to a time: safehold against pgBackRest's `restore --type=time`, same server, same WAL.

One run, one PostgreSQL 15 server (bench/pg_bench.py's PgServer and "small SaaS" generator)
whose archive_command feeds BOTH tools:

    safehold wal-push --async --spool SPOOL %p && pgbackrest --stanza=bench archive-push %p

1. generate the database (`--size-mb`), take a base backup with each tool
   (`safehold pitr basebackup`, `pgbackrest backup --type=full`);
2. write `--wal-mb` of WAL (batched UPDATEs of orders); at ~80% of it the load pauses, a
   checksum of the orders table and a "before" mark are taken, the target time T is read
   from the server's clock, then an "after" mark, and the rest of the load runs;
3. switch the segment and wait until both archives hold it;
4. restore each to T into a new data folder, alternating which tool goes first
   (`--rounds`), and time it to a promoted server: safehold `restore latest --source db
   --at T --into DIR`, then `pg_ctl start` until `pg_is_in_recovery()` is false;
   pgBackRest `restore --type=time --target=T --target-action=promote`, then the same
   start (its restore_command `archive-get` fetches the WAL during recovery);
5. every restored cluster must have the orders checksum taken at T, the "before" mark and
   not the "after" mark.

Both repositories are encrypted (safehold always; pgBackRest `aes-256-cbc`) and compressed
with zstd (`compress-type=zst`); pgBackRest gets `process-max=2` (the machine's cores).
The server runs with fsync=off (as bench/pg_bench.py), the restored clusters with
archive_mode=off. Prints a Markdown table and writes the raw numbers to `--out`.

    .venv/bin/python bench/pitr_bench.py --size-mb 250 --wal-mb 300
    .venv/bin/python bench/pitr_bench.py --smoke        # CI: a few MB, under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import site
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pg_bench import DB, PgServer, free_port, generate_shop, pg_bin_dir, stop_children
from run import BenchError, say, tree_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pitr bench password, not a secret"
STANZA = "bench"
PGBACKREST = "/usr/bin/pgbackrest"
AS_ROOT = os.geteuid() == 0


@dataclass
class Timing:
    tool: str
    round: int
    restore_s: float  # the restore command
    recover_s: float  # start until promoted (WAL replay; pgBackRest also fetches WAL here)
    verified: bool

    @property
    def total_s(self) -> float:
        return self.restore_s + self.recover_s


@dataclass
class Results:
    timings: list[Timing] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if AS_ROOT else argv


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 3600,
        what: str = "") -> str:  # fmt: skip
    done = subprocess.run(as_owner(argv), env=env, cwd="/", capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"{what or argv[0]} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-2000:]}")  # fmt: skip
    return done.stdout


def owner_python(pythonpath: str) -> str:
    """An interpreter the postgres account may run safehold with (archive_command runs as it)."""
    candidates = [sys.executable, os.path.realpath(sys.executable),
                  f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"]  # fmt: skip
    for candidate in candidates:
        argv = ["env", f"PYTHONPATH={pythonpath}", candidate, "-c", "import safehold.cli.main"]
        probe = subprocess.run(as_owner(argv), cwd="/", capture_output=True, check=False)
        if probe.returncode == 0:
            return candidate
    raise BenchError("no Python interpreter the postgres account can run safehold with")


def chown(path: Path) -> None:
    if AS_ROOT:
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, "postgres", "postgres")


class PitrBench:
    def __init__(self, root: Path, server: PgServer, args: argparse.Namespace) -> None:
        self.root = root
        self.server = server
        self.args = args
        self.res = Results()
        self.app = root / "app"
        self.repo = self.app / "repo"
        self.spool = self.app / "spool"
        self.pgbr = root / "pgbackrest"
        self.conf = self.pgbr / "pgbackrest.conf"
        pythonpath = ":".join([str(REPO_ROOT / "src"), *site.getsitepackages()])
        python = owner_python(pythonpath)
        # bytecode cached where the postgres account may write it, PYTHONDONTWRITEBYTECODE
        # dropped (as bench/run.py does): a source checkout would otherwise be recompiled on
        # every start (~1 s), which an installed package is not
        (root / "pycache").mkdir(exist_ok=True)
        chown(root / "pycache")
        self.safehold = ["env", "-u", "PYTHONDONTWRITEBYTECODE", f"PYTHONPATH={pythonpath}",
                         f"PYTHONPYCACHEPREFIX={root / 'pycache'}", python, "-m", "safehold",
                         "--plan", str(self.app / "safehold.toml")]  # fmt: skip
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PG", "SAFEHOLD_"))}  # fmt: skip

    # ----- setup -------------------------------------------------------------------------

    def write_configs(self) -> None:
        for folder in (self.app, self.spool, self.pgbr / "repo", self.pgbr / "log",
                       self.pgbr / "lock", self.pgbr / "spool"):  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True)
        (self.app / ".env").write_text(
            f"SAFEHOLD_PASSWORD='{PASSWORD}'\nBENCH_DB_URL='{self.server.url(DB)}'\n"
        )
        (self.app / ".env").chmod(0o600)
        (self.app / "safehold.toml").write_text(f"""app = "bench"
env = "prod"
[targets]
rpo = "5m"
rto = "1h"
[[sources]]
name = "db"
type = "postgres"
url = "${{BENCH_DB_URL}}"
pitr = "wal"
[[destinations]]
name = "local"
repository = "{self.repo}"
""")  # fmt: skip
        self.conf.write_text(f"""[global]
repo1-path={self.pgbr / "repo"}
repo1-retention-full=2
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={PASSWORD.replace(" ", "-")}
compress-type=zst
process-max=2
log-path={self.pgbr / "log"}
lock-path={self.pgbr / "lock"}
spool-path={self.pgbr / "spool"}
log-level-console=warn
log-level-file=info
start-fast=y

[{STANZA}]
pg1-path={self.server.data}
pg1-port={self.server.port}
pg1-socket-path={self.server.socket_dir}
pg1-user=postgres
""")  # fmt: skip
        chown(self.app)
        chown(self.pgbr)

    def archive_command(self) -> str:
        push = " ".join(self.safehold) + f" -q wal-push --async --spool {self.spool} %p"
        return f"{push} && {PGBACKREST} --config={self.conf} --stanza={STANZA} archive-push %p"

    def configure_server(self) -> None:
        command = self.archive_command().replace("'", "''")
        with open(self.server.data / "postgresql.conf", "a") as conf:
            conf.write(f"wal_level = replica\narchive_mode = on\narchive_command = "
                       f"'{command}'\n"
                       "max_wal_senders = 4\n")  # fmt: skip
        run([self.server.tool("pg_ctl"), "-D", str(self.server.data), "-l", str(self.server.log),
             "-w", "-t", "120", "restart"], what="pg_ctl restart")  # fmt: skip

    def pgbackrest(self, *args: str, timeout: float = 7200) -> str:
        return run([PGBACKREST, f"--config={self.conf}", f"--stanza={STANZA}", *args],
                   timeout=timeout, what=f"pgbackrest {args[-1]}")  # fmt: skip

    def sh(self, *args: str, timeout: float = 7200) -> str:
        return run([*self.safehold, *args], env=self.env, timeout=timeout,
                   what=f"safehold {' '.join(args[:3])}")  # fmt: skip

    # ----- phases ------------------------------------------------------------------------

    def prepare(self) -> None:
        self.write_configs()
        self.sh("init")
        self.configure_server()
        self.pgbackrest("stanza-create")
        self.server.psql(f"CREATE DATABASE {DB}")
        say(f"generating ~{self.args.size_mb} MB")
        generate_shop(self.server, int(self.args.size_mb * 1024 * 1024), 7, 7200)
        self.server.psql("CREATE TABLE pitr_marks (note text PRIMARY KEY, "
                         "at timestamptz NOT NULL DEFAULT clock_timestamp())", DB)  # fmt: skip
        self.server.psql("VACUUM ANALYZE", DB, timeout=7200)
        self.res.facts["db_bytes"] = self.server.database_size()
        say("base backups")
        t0 = time.monotonic()
        self.sh("pitr", "basebackup")
        self.res.facts["safehold_basebackup_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        self.pgbackrest("--type=full", "backup")
        self.res.facts["pgbackrest_backup_s"] = round(time.monotonic() - t0, 2)

    def lsn(self) -> int:
        text = self.server.psql("SELECT pg_current_wal_lsn() - '0/0'").strip()
        return int(text)

    def load(self, until_bytes: int) -> None:
        orders = int(self.server.psql("SELECT max(id) FROM orders", DB).strip())
        step = max(1000, orders // 20)
        start = self.lsn()
        lo = 1
        while self.lsn() - start < until_bytes:
            hi = min(orders, lo + step)
            self.server.psql(
                "UPDATE orders SET updated_at = updated_at + interval '1 second', note = "
                f"md5(random()::text) WHERE id BETWEEN {lo} AND {hi}", DB, timeout=3600,
            )  # fmt: skip
            lo = 1 if hi >= orders else hi + 1

    def checksum(self, psql: Any) -> str:
        return str(psql("SELECT md5(string_agg(id || ':' || coalesce(note, '') || ':' || "
                        "updated_at, ',' ORDER BY id)) FROM orders").strip())  # fmt: skip

    def write_wal(self) -> str:
        wal = int(self.args.wal_mb * 1024 * 1024)
        say(f"writing ~{self.args.wal_mb} MB of WAL")
        first = self.lsn()
        self.load(int(wal * 0.8))
        self.res.facts["orders_md5_at_target"] = self.checksum(lambda q: self.server.psql(q, DB))
        self.server.psql("INSERT INTO pitr_marks (note) VALUES ('before')", DB)
        time.sleep(1.0)
        target = self.server.psql(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
        ).strip()
        time.sleep(1.0)
        self.server.psql("INSERT INTO pitr_marks (note) VALUES ('after')", DB)
        self.load(int(wal * 0.2))
        self.res.facts["wal_bytes"] = self.lsn() - first
        segment = self.server.psql("SELECT pg_walfile_name(pg_switch_wal())").strip()
        say(f"waiting until both archives hold {segment}")
        deadline = time.monotonic() + 3600
        while True:
            last = self.server.psql(
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").strip()  # fmt: skip
            waiting = [p for p in self.spool.iterdir() if len(p.name) == 24]
            if last and last[:24] >= segment and not waiting:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"archiving did not reach {segment} (last {last})")
            time.sleep(0.5)
        self.res.facts["target"] = target
        return target

    # ----- the restores ------------------------------------------------------------------

    def start_restored(self, data: Path) -> tuple[float, Any]:
        port = free_port()
        sock = data.parent / f"{data.name}-sock"
        sock.mkdir()
        chown(sock)
        log = data.parent / f"{data.name}.log"
        t0 = time.monotonic()
        run([self.server.tool("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "7200",
             "-o", f"-p {port} -k {sock} -c listen_addresses='' -c archive_mode=off", "start"],
            what=f"pg_ctl start of {data.name}")  # fmt: skip

        def psql(query: str, db: str = DB) -> str:
            return run([self.server.tool("psql"), "-X", "-At", "-h", str(sock), "-p", str(port),
                        "-U", "postgres", "-d", db, "-c", query], what="psql")  # fmt: skip

        deadline = time.monotonic() + 7200
        while psql("SELECT pg_is_in_recovery()", "postgres").strip() != "f":
            if time.monotonic() > deadline:
                raise BenchError(f"{data.name} never promoted")
            time.sleep(0.1)
        return time.monotonic() - t0, psql

    def stop_restored(self, data: Path) -> None:
        with contextlib.suppress(BenchError):
            run([self.server.tool("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(data, ignore_errors=True)

    def verify(self, psql: Any) -> bool:
        marks = psql("SELECT string_agg(note, ',' ORDER BY note) FROM pitr_marks").strip()
        same = self.checksum(psql) == self.res.facts["orders_md5_at_target"]
        return marks == "before" and same

    def restore_safehold(self, target: str, data: Path) -> tuple[float, Path]:
        t0 = time.monotonic()
        self.sh("restore", "latest", "--source", "db", "--at", target, "--into", str(data))
        return time.monotonic() - t0, data

    def restore_pgbackrest(self, target: str, data: Path) -> tuple[float, Path]:
        data.mkdir(mode=0o700)
        chown(data)
        t0 = time.monotonic()
        self.pgbackrest(f"--pg1-path={data}", "--type=time", f"--target={target}",
                        "--target-action=promote", "restore")  # fmt: skip
        return time.monotonic() - t0, data

    def restores(self, target: str) -> None:
        area = self.root / "restores"
        area.mkdir(exist_ok=True)
        chown(area)
        for round_ in range(self.args.rounds):
            order = ["safehold", "pgbackrest"] if round_ % 2 == 0 else ["pgbackrest", "safehold"]
            for tool in order:
                data = area / f"{tool}-{round_}"
                os.sync()
                with contextlib.suppress(OSError):  # a cold page cache for both, when allowed
                    Path("/proc/sys/vm/drop_caches").write_text("1")
                say(f"round {round_ + 1}: {tool} restore to {target}")
                if tool == "safehold":
                    restore_s, data = self.restore_safehold(target, data)
                else:
                    restore_s, data = self.restore_pgbackrest(target, data)
                recover_s, psql = self.start_restored(data)
                ok = self.verify(psql)
                self.res.timings.append(Timing(tool, round_ + 1, round(restore_s, 2),
                                               round(recover_s, 2), ok))  # fmt: skip
                say(f"  {tool}: restore {restore_s:.1f} s + recovery {recover_s:.1f} s, "
                    f"{'verified' if ok else 'WRONG DATA'}")  # fmt: skip
                self.stop_restored(data)
                if not ok:
                    raise BenchError(f"{tool}'s restore to {target} has the wrong data")

    def run(self) -> None:
        self.prepare()
        target = self.write_wal()
        self.res.facts["safehold_repo_bytes"] = tree_bytes(self.repo)[0]
        self.res.facts["pgbackrest_repo_bytes"] = tree_bytes(self.pgbr / "repo")[0]
        self.restores(target)


def summary(res: Results) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in ("safehold", "pgbackrest"):
        rows = [t for t in res.timings if t.tool == tool]
        if rows:
            out[tool] = {
                "restore_s": statistics.median(t.restore_s for t in rows),
                "recover_s": statistics.median(t.recover_s for t in rows),
                "total_s": statistics.median(t.total_s for t in rows),
                "rounds": len(rows),
            }
    if "safehold" in out and "pgbackrest" in out:
        out["ratio_total"] = round(out["safehold"]["total_s"] / out["pgbackrest"]["total_s"], 2)
    return out


def markdown(res: Results, summ: dict[str, Any]) -> str:
    mb = 1024 * 1024
    facts = res.facts
    lines = [
        f"database {facts.get('db_bytes', 0) / mb:.0f} MB, WAL {facts.get('wal_bytes', 0) / mb:.0f}"
        f" MB, target {facts.get('target')}",
        "",
        "| tool | round | restore command | start → promoted | total | data at T |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in res.timings:
        lines.append(f"| {t.tool} | {t.round} | {t.restore_s:.1f} s | {t.recover_s:.1f} s | "
                     f"{t.total_s:.1f} s | {'yes' if t.verified else 'NO'} |")  # fmt: skip
    if "ratio_total" in summ:
        lines.append("")
        lines.append(f"median total: safehold {summ['safehold']['total_s']:.1f} s, pgBackRest "
                     f"{summ['pgbackrest']['total_s']:.1f} s (safehold / pgBackRest = "
                     f"{summ['ratio_total']:.2f})")  # fmt: skip
    lines.append(f"base backup: safehold {facts.get('safehold_basebackup_s')} s, pgBackRest "
                 f"{facts.get('pgbackrest_backup_s')} s; repository after the WAL: safehold "
                 f"{facts.get('safehold_repo_bytes', 0) / mb:.0f} MB, pgBackRest "
                 f"{facts.get('pgbackrest_repo_bytes', 0) / mb:.0f} MB")  # fmt: skip
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=250)
    parser.add_argument("--wal-mb", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="restores per tool (alternating)")
    parser.add_argument("--smoke", action="store_true", help="a few MB, one round (CI)")
    parser.add_argument("--out", type=Path, help="write the raw numbers here (JSON)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    if args.smoke:
        args.size_mb, args.wal_mb, args.rounds = 5, 20, 1
    return args


def main() -> int:
    args = parse_args()
    bin_dir = pg_bin_dir()
    if bin_dir is None or not os.access(PGBACKREST, os.X_OK):
        say("needs the PostgreSQL server binaries and /usr/bin/pgbackrest "
            "(apt-get install postgresql pgbackrest)")  # fmt: skip
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt))
    root = Path(tempfile.mkdtemp(prefix="safehold-pitrbench-"))
    root.chmod(0o755)
    server = PgServer(root / "pg", bin_dir, free_port())
    bench = PitrBench(root, server, args)
    started = time.monotonic()
    code = 0
    try:
        server.start()
        bench.run()
    except BenchError as err:
        say(f"FAILED: {err}")
        code = 1
    except KeyboardInterrupt:
        stop_children()
        code = 130
    finally:
        for data in (root / "restores").glob("*") if (root / "restores").exists() else []:
            if (data / "postmaster.pid").exists():
                bench.stop_restored(data)
        server.stop()
        for lock in bench.spool.glob("pusher.lock") if bench.spool.exists() else []:
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(lock.read_text().split()[0]), signal.SIGTERM)
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summ = summary(bench.res)
    document = {"host": platform.node(), "seconds": round(time.monotonic() - started, 1),
                "args": {k: str(v) for k, v in vars(args).items()}, "facts": bench.res.facts,
                "timings": [t.__dict__ | {"total_s": t.total_s} for t in bench.res.timings],
                "summary": summ}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(document, indent=2))
    print(markdown(bench.res, summ))
    print(f"({document['seconds']} s)")
    if code == 0 and args.smoke and not all(t.verified for t in bench.res.timings):
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
