#!/usr/bin/env python3
"""WAL archiving throughput: safehold vs pgBackRest, the same segments, in the same run.

One run: start a private PostgreSQL server (bench/pg_bench.py's PgServer: as root through
`runuser -u postgres`), turn on `archive_mode` with an empty `archive_command` (the server
keeps every finished segment and marks it `pg_wal/archive_status/NAME.ready`), write WAL with
pgbench (`pgbench -i`, then TPC-B transactions) until `--segments` segments are ready, create
the pgBackRest stanzas, and stop the server. Then, for every mode, a fresh repository and a
hard-linked copy of the data folder, and an archiver that does what PostgreSQL's does: run
the archive_command for the oldest ready segment (`%p` = `pg_wal/NAME`, in the data folder,
as the server's account), on success rename its `.ready` to `.done`, on failure wait 1 s and
retry. Timed from the first command until every segment is acknowledged AND stored (for
safehold's async mode also: its spool is empty).

Modes (alternating order each round, the segments in the page cache before each):
  safehold sync    `safehold wal-push %p`
  safehold async   `safehold wal-push --async --spool DIR %p` (the pusher reads ahead in pg_wal)
  pgBackRest sync  `pgbackrest archive-push %p` (archive-async=n)
  pgBackRest async `pgbackrest archive-push %p` with archive-async=y, process-max=2
Both tools encrypt (safehold: restic's AES-256-CTR + Poly1305; pgBackRest: aes-256-cbc) and
compress with zstd level 3 (safehold's default; pgBackRest `compress-type=zst`); safehold
uses its real key derivation (no SAFEHOLD_KDF_N shortcut).

    .venv/bin/python bench/wal_bench.py --segments 48 --rounds 2 --out /tmp/wal-bench.json
    .venv/bin/python bench/wal_bench.py --smoke        # 2 segments, under 30 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pg_bench import PgServer, free_port, pg_bin_dir
from run import MB, BenchError, say

REPO_ROOT = Path(__file__).resolve().parent.parent
SEGMENT = 16 * 1024 * 1024
PASSWORD = "bench-wal-password-not-a-secret"
STANZA = "bench"
MODES = ("safehold sync", "safehold async", "pgBackRest sync", "pgBackRest async")
AS_ROOT = os.geteuid() == 0
#: no SAFEHOLD_* variable (a repository, a password, a cheap KDF) leaks in from outside
#: (and byte code is cached, as in an installed package: no PYTHONDONTWRITEBYTECODE)
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("SAFEHOLD_", "PGBACKREST_", "PYTHONDONTWRITEBYTECODE"))
}


@dataclass
class Result:
    mode: str
    round: int
    segments: int
    seconds: float
    failures: int  # archive_command runs that failed (and were retried)
    repo_bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.segments * SEGMENT / MB / self.seconds


def as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if AS_ROOT else argv


def give(path: Path) -> None:
    if AS_ROOT:
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, "postgres", "postgres")


SRC = REPO_ROOT / "src"  # --src: another checkout's safehold (a before/after comparison)


def server_python() -> tuple[str, str]:
    """(interpreter, PYTHONPATH) the server's account can run this tree's safehold with."""
    path = ":".join([str(SRC), *site.getsitepackages()])
    for candidate in (
        sys.executable,
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        probe = subprocess.run(as_owner(["env", f"PYTHONPATH={path}", candidate, "-c",
                                         "import safehold.cli.main"]),
                               cwd="/", capture_output=True, check=False)  # fmt: skip
        if probe.returncode == 0:
            return candidate, path
    raise BenchError("no Python interpreter the postgres account can run safehold with")


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ready(data: Path) -> list[str]:
    status = data / "pg_wal" / "archive_status"
    return sorted(p.name[: -len(".ready")] for p in status.glob("*.ready") if len(p.name) == 30)


class Bench:
    def __init__(self, root: Path, segments: int, tpcb_seconds: int = 3) -> None:
        self.root = root
        self.count = segments
        self.tpcb_seconds = tpcb_seconds
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise BenchError("PostgreSQL server binaries not found: apt-get install postgresql")
        self.server = PgServer(root / "pg", bin_dir, free_port())
        self.python, self.pythonpath = server_python()
        self.password_file = root / "password"
        self.password_file.write_text(PASSWORD + "\n")
        self.pgbr_conf = root / "pgbackrest.conf"
        self.names: list[str] = []

    # ----- the segments ------------------------------------------------------------------

    def make_wal(self, repos: list[Path]) -> None:
        server = self.server
        server.start()
        server.psql("ALTER SYSTEM SET archive_mode = 'on'")
        server.psql("ALTER SYSTEM SET archive_command = ''")  # keep every segment, .ready
        restart = server._run_as_owner([server.tool("pg_ctl"), "-D", str(server.data), "-l",
                                        str(server.log), "-w", "restart"])  # fmt: skip
        if restart.returncode != 0:
            raise BenchError(f"pg_ctl restart failed: {restart.stderr}")
        env = {**os.environ, "PGHOST": str(server.socket_dir), "PGPORT": str(server.port),
               "PGUSER": "postgres"}  # fmt: skip
        pgbench = server.tool("pgbench")
        # pgbench -i writes about one 16 MiB segment of WAL per scale unit (a bulk load),
        # then TPC-B transactions (small updates: WAL of many records and page images)
        subprocess.run(as_owner([pgbench, "-i", "-q", "-s", str(self.count), "postgres"]),
                       env=env, cwd="/", capture_output=True, check=True)  # fmt: skip
        subprocess.run(as_owner([pgbench, "-n", "-c", "2", "-j", "2", "-T", str(self.tpcb_seconds),
                                 "postgres"]),
                       env=env, cwd="/", capture_output=True, check=True)  # fmt: skip
        while len(ready(server.data)) < self.count:
            server.psql("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) "
                        "SELECT 1, 1, g, g, now(), left(md5(random()::text), 22) "
                        "FROM generate_series(1, 200000) g")  # fmt: skip
        server.psql("SELECT pg_switch_wal()")
        self.names = ready(server.data)[: self.count]
        self.pgbr_conf.write_text(
            "[global]\n"
            f"log-path={self.root / 'pgbr-log'}\nlock-path={self.root / 'pgbr-lock'}\n"
            "log-level-console=warn\nlog-level-file=info\n"
            "compress-type=zst\ncompress-level=3\n"
            f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PASSWORD}\n"
            f"[{STANZA}]\npg1-path={server.data}\npg1-socket-path={server.socket_dir}\n"
            f"pg1-port={server.port}\n"
        )
        for folder in ("pgbr-log", "pgbr-lock"):
            (self.root / folder).mkdir(exist_ok=True)
        give(self.root)
        for repo in repos:  # pgBackRest needs the running server to create a stanza
            repo.mkdir()
            give(repo)
            self.pgbackrest(repo, "stanza-create")
        server.stop()

    def pgbackrest(self, repo: Path, *args: str, data: Path | None = None) -> None:
        done = subprocess.run(as_owner(self.pgbr_argv(repo, data) + list(args)), cwd="/",
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"pgbackrest {' '.join(args)} failed: {done.stderr or done.stdout}")

    def pgbr_argv(self, repo: Path, data: Path | None) -> list[str]:
        argv = ["pgbackrest", f"--config={self.pgbr_conf}", f"--stanza={STANZA}",
                f"--repo1-path={repo}"]  # fmt: skip
        if data is not None:
            argv.append(f"--pg1-path={data}")
        return argv

    def safehold_argv(self, repo: Path) -> list[str]:
        return [
            "env",
            f"PYTHONPATH={self.pythonpath}",
            self.python,
            "-m",
            "safehold",
            "-q",
            "-r",
            str(repo),
            "--password-file",
            str(self.password_file),
        ]

    # ----- one mode ------------------------------------------------------------------------

    def copy_data(self, name: str) -> Path:
        """A hard-linked copy of the stopped server's data folder (the segments are only
        read; each copy has its own archive_status), with exactly our segments ready."""
        data = self.root / f"data-{name}"
        subprocess.run(["cp", "-al", str(self.server.data), str(data)], check=True)
        status = data / "pg_wal" / "archive_status"
        for entry in status.iterdir():  # own files: the archiver renames them
            entry.unlink()
        for name_ in self.names:
            (status / f"{name_}.ready").touch()
        give(status)
        return data

    def archive(self, data: Path, command: list[str], done: object = None) -> tuple[float, int]:
        """PostgreSQL's archiver loop over our segments; (seconds, failed runs)."""
        for name in self.names:  # the input in the page cache, the same for every mode
            with open(data / "pg_wal" / name, "rb") as handle:
                while handle.read(1 << 20):
                    pass
        status = data / "pg_wal" / "archive_status"
        failures = 0
        started = time.monotonic()
        for name in self.names:
            while True:
                run = subprocess.run(as_owner([*command, f"pg_wal/{name}"]), cwd=data,
                                     env=CLEAN_ENV, capture_output=True, text=True,
                                     check=False)  # fmt: skip
                if run.returncode == 0:
                    (status / f"{name}.ready").rename(status / f"{name}.done")
                    break
                failures += 1
                if failures > 3 * len(self.names):
                    raise BenchError(f"{' '.join(command[-3:])} keeps failing: {run.stderr}")
                time.sleep(1.0)  # as PostgreSQL waits between retries
        if callable(done):
            while not done():
                time.sleep(0.02)
        return time.monotonic() - started, failures

    def run_mode(self, mode: str, round_: int) -> Result:
        tag = f"{mode.replace(' ', '-')}-{round_}"
        data = self.copy_data(tag)
        repo = self.root / f"repo-{tag}"
        if mode.startswith("safehold"):
            init = subprocess.run(as_owner([*self.safehold_argv(repo), "init"]), cwd="/",
                                  env=CLEAN_ENV, capture_output=True, text=True,
                                  check=False)  # fmt: skip
            if init.returncode != 0:
                raise BenchError(f"safehold init failed: {init.stderr}")
            spool = self.root / f"spool-{tag}"
            spool.mkdir()
            give(spool)
            command = [*self.safehold_argv(repo), "wal-push"]
            if mode == "safehold async":
                command += ["--async", "--spool", str(spool)]

            def spool_empty() -> bool:
                return not [p for p in spool.iterdir() if len(p.name) == 24]

            try:
                seconds, failures = self.archive(data, command, spool_empty)
            finally:
                stop_pusher(spool)
            stored = count_safehold(repo)
        else:
            async_ = mode == "pgBackRest async"
            spool = self.root / f"pgbr-spool-{tag}"
            spool.mkdir()
            give(spool)
            command = [*self.pgbr_argv(repo, data), "--process-max=2"]
            if async_:
                command += ["--archive-async=y", f"--spool-path={spool}"]
            command.append("archive-push")
            seconds, failures = self.archive(data, command)
            stored = len(list((repo / "archive" / STANZA).rglob("0000*")))
        if stored < len(self.names):
            raise BenchError(f"{mode}: only {stored} of {len(self.names)} segments stored")
        result = Result(mode, round_, len(self.names), seconds, failures, tree_size(repo))
        shutil.rmtree(data, ignore_errors=True)
        return result

    # ----- a live server under pgbench load ------------------------------------------------

    def load_run(self, mode: str, seconds: int) -> dict[str, float]:
        """A new server whose archive_command is `mode`'s, `pgbench -c 2` for `seconds`:
        the WAL rate, and per segment the archive lag (its .ready seen -> its .done seen)."""
        tag = f"load-{mode.replace(' ', '-')}"
        server = PgServer(self.root / tag, self.server.bin_dir, free_port())
        repo = self.root / f"repo-{tag}"
        spool = self.root / f"spool-{tag}"
        spool.mkdir()
        give(spool)
        server.start()
        try:
            if mode.startswith("safehold"):
                init = subprocess.run(as_owner([*self.safehold_argv(repo), "init"]), cwd="/",
                                      env=CLEAN_ENV, capture_output=True, text=True,
                                      check=False)  # fmt: skip
                if init.returncode != 0:
                    raise BenchError(f"safehold init failed: {init.stderr}")
                argv = [*self.safehold_argv(repo), "wal-push", "--async", "--spool", str(spool)]
            else:
                repo.mkdir()
                give(repo)
                argv = [*self.pgbr_argv(repo, server.data), "--process-max=2",
                        "--archive-async=y", f"--spool-path={spool}"]  # fmt: skip
            command = " ".join(shlex.quote(a) for a in argv)
            command = f"env -u PYTHONDONTWRITEBYTECODE {command} " + (
                "archive-push %p" if mode.startswith("pgBackRest") else "%p"
            )
            if mode.startswith("pgBackRest"):  # before archiving starts: no failed pushes
                subprocess.run(as_owner([*argv[:5], f"--pg1-port={server.port}",
                                         f"--pg1-socket-path={server.socket_dir}",
                                         "stanza-create"]),
                               cwd="/", capture_output=True, check=True)  # fmt: skip
            server.psql("ALTER SYSTEM SET archive_mode = 'on'")
            server.psql(f"ALTER SYSTEM SET archive_command = {lit(command)}")
            restart = server._run_as_owner([server.tool("pg_ctl"), "-D", str(server.data), "-l",
                                            str(server.log), "-w", "restart"])  # fmt: skip
            if restart.returncode != 0:
                raise BenchError(f"pg_ctl restart failed: {restart.stderr}")
            env = {**os.environ, "PGHOST": str(server.socket_dir), "PGPORT": str(server.port),
                   "PGUSER": "postgres"}  # fmt: skip
            pgbench = server.tool("pgbench")
            # a write-heavy load: each transaction inserts 1000 rows of 128 bytes (~200 kB of
            # WAL); TPC-B alone writes under 1 MB/s of WAL here
            server.psql("CREATE TABLE w (id int, payload text)")
            script = self.root / "insert.sql"
            script.write_text("INSERT INTO w SELECT g, repeat(md5(random()::text), 4) "
                              "FROM generate_series(1, 1000) g;\n")  # fmt: skip
            give(script)
            status = server.data / "pg_wal" / "archive_status"
            start_lsn = server.psql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").strip()
            seen: dict[str, float] = {}
            done: dict[str, float] = {}
            load = subprocess.Popen(as_owner([pgbench, "-n", "-c", "2", "-j", "2", "-T",
                                              str(seconds), "-f", str(script), "postgres"]),
                                    env=env, cwd="/", stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            began = time.monotonic()

            def sample() -> None:
                now = time.monotonic()
                for entry in os.listdir(status):
                    name, _, state = entry.partition(".")
                    if state == "ready":
                        seen.setdefault(name, now)
                    elif state == "done" and name in seen:
                        done.setdefault(name, now)

            while load.poll() is None:
                sample()
                time.sleep(0.1)
            wal_bytes = int(server.psql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").strip())
            wal_bytes -= int(start_lsn)
            elapsed = time.monotonic() - began
            last = server.psql("SELECT pg_walfile_name(pg_switch_wal())").strip()
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                sample()
                archived = server.psql("SELECT coalesce(last_archived_wal, '') "
                                       "FROM pg_stat_archiver").strip()  # fmt: skip
                if archived >= last:
                    break
                time.sleep(0.1)
            catch_up = time.monotonic() - began - elapsed
            lags = sorted(done[n] - seen[n] for n in done)
            if not lags:
                raise BenchError(f"{mode}: no segment was archived under load")
            return {"wal_mb_per_s": wal_bytes / MB / elapsed, "segments": len(lags),
                    "lag_median_s": lags[len(lags) // 2], "lag_max_s": lags[-1],
                    "catch_up_s": catch_up}  # fmt: skip
        finally:
            stop_pusher(spool)
            server.stop()
            shutil.rmtree(self.root / tag, ignore_errors=True)


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def count_safehold(repo: Path) -> int:
    sys.path.insert(0, str(REPO_ROOT / "src"))  # the archive format is the same before/after
    from safehold.backends.local import LocalBackend
    from safehold.pitr.store import WalArchive
    from safehold.repo.repository import Repository

    opened = Repository.open(LocalBackend(repo), PASSWORD.encode())
    return len(WalArchive.load(opened).files)


def stop_pusher(spool: Path) -> None:
    """Stop the pusher whose pid is in the spool's lock file (only that process)."""
    with contextlib.suppress(OSError, ValueError, IndexError, ProcessLookupError):
        os.kill(int((spool / "pusher.lock").read_text().split()[0]), signal.SIGTERM)


def main() -> None:
    global SRC
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="2 segments, one round (< 30 s)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--src",
        type=Path,
        default=SRC,
        help="run the safehold of this source folder (default: this checkout's)",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="SECONDS",
        help="also: a live server under pgbench load this long, per async mode",
    )
    args = parser.parse_args()
    if args.smoke:
        args.segments, args.rounds = 2, 1
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    SRC = args.src.resolve()
    if shutil.which("pgbackrest") is None:
        raise SystemExit("pgbackrest not found: apt-get install pgbackrest")
    # the byte code of this tree, as an installed package has it (the server's account may
    # not write __pycache__ here, and would compile every module in every archive_command)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC)],
                   capture_output=True, check=False)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="walbench-"))
    root.chmod(0o755)
    bench = Bench(root, args.segments, 1 if args.smoke else 3)
    results: list[Result] = []
    loads: dict[str, dict[str, float]] = {}
    try:
        repos = [root / f"repo-{m.replace(' ', '-')}-{r}" for r in range(args.rounds)
                 for m in modes if m.startswith("pgBackRest")]  # fmt: skip
        say(f"writing {args.segments} WAL segments with pgbench ...")
        began = time.monotonic()
        bench.make_wal(repos)
        say(f"  ... in {time.monotonic() - began:.1f} s")
        for round_ in range(args.rounds):
            order = modes if round_ % 2 == 0 else list(reversed(modes))
            for mode in order:
                result = bench.run_mode(mode, round_)
                say(f"round {round_}: {mode:17} {result.seconds:7.2f} s "
                    f"{result.mb_per_s:7.1f} MB/s  ({result.failures} retries)")  # fmt: skip
                results.append(result)
        for mode in ("safehold async", "pgBackRest async") if args.load else ():
            loads[mode] = bench.load_run(mode, args.load)
            say(f"under load: {mode:17} {loads[mode]}")
    except (BenchError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"wal bench failed: {err}") from None
    finally:
        bench.server.stop()
        shutil.rmtree(root, ignore_errors=True)
    wal_mb = args.segments * SEGMENT / MB
    print(f"\n{args.segments} segments = {wal_mb:.0f} MB of WAL (pgbench), "
          f"{args.rounds} round(s); median per mode\n")  # fmt: skip
    print("| mode | seconds | segments/s | MB/s of WAL | repository MB | retries |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in modes:
        mine = sorted((r for r in results if r.mode == mode), key=lambda r: r.seconds)
        mid = mine[len(mine) // 2]
        print(f"| {mode} | {mid.seconds:.2f} | {mid.segments / mid.seconds:.2f} | "
              f"{mid.mb_per_s:.1f} | {mid.repo_bytes / MB:.1f} | {mid.failures} |")  # fmt: skip
    if loads:
        print(
            f"\nA live server under `pgbench -c 2 -j 2 -T {args.load}` (1000-row inserts), "
            "archive_command = the async mode; lag = a segment's .ready to its .done\n"
        )
        print("| mode | WAL written MB/s | segments | lag median s | lag max s | "
              "caught up after s |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|")
        for mode, row in loads.items():
            print(f"| {mode} | {row['wal_mb_per_s']:.1f} | {row['segments']:.0f} | "
                  f"{row['lag_median_s']:.2f} | {row['lag_max_s']:.2f} | "
                  f"{row['catch_up_s']:.2f} |")  # fmt: skip
    if args.out:
        raw = [asdict(r) | {"mb_per_s": r.mb_per_s} for r in results]
        args.out.write_text(json.dumps({"archive": raw, "load": loads}, indent=2))


if __name__ == "__main__":
    main()
