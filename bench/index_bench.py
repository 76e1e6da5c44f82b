#!/usr/bin/env python3
"""A repository of many blobs: how fast it opens, how much memory its index takes, and how
long a one-file restore waits for it. safehold vs restic on the SAME repository.

The repository is built through safehold's real writer (Repository, Packer, save_index,
trees, a snapshot): FILES small files of 64-511 bytes (one data blob each) in folders of
1,000, so the repository holds about FILES + FILES/1000 blobs, indexed in restic's 50,000-blob
index files. restic reads it as its own (`restic check` runs on it first).

Measured, each tool in its own process, order alternated between repeats, medians reported:
  open      `dump latest <one file>`: open the repository (key, snapshots, full index), read
            one small file. This is what every restore, check, copy or prune pays first.
            Cold: no local cache (safehold's index cache removed first, restic --no-cache).
  open-warm the same with the local cache each tool keeps between runs (safehold's index
            cache, repo/indexcache.py; restic's cache of index files): a repository opened
            before, the usual case.
  restore   `restore latest --include <one file>` into an empty folder (verified).
  probe     safehold only, in process: seconds to read the index, and its bytes per blob
            (the index's own arrays) next to the process's peak RSS; without a cache, with an
            empty one (decode, sort, write the cache) and with the cache written.
Memory per blob for both tools is also estimated as (peak RSS of `open` on the big
repository - the same on a 1,000-file repository) / blobs.

    .venv/bin/python bench/index_bench.py --files 1000000      # ~30 min, ~0.5 GB disk
    .venv/bin/python bench/index_bench.py --smoke              # seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import GNU_TIME, PASSWORD, BenchError, Restic, Safehold, Tool, run_timed, say

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from safehold.backends.local import LocalBackend  # noqa: E402
from safehold.repo.clock import Host  # noqa: E402
from safehold.repo.indexcache import IndexCache  # noqa: E402
from safehold.repo.pack import BlobType, encode_blob  # noqa: E402
from safehold.repo.packer import Packer  # noqa: E402
from safehold.repo.repository import Repository  # noqa: E402
from safehold.repo.snapshot import Snapshot  # noqa: E402
from safehold.repo.tree import Node, encode_tree  # noqa: E402

FILES_PER_DIR = 1000
INDEX_EVERY_PACKS = 4  # the archiver also writes its index every few packs
HOST = Host("index-bench", "bench", 0, 0, 1)
BASELINE_FILES = 1000
TIMEOUT = 3600.0


@dataclass
class Built:
    path: Path
    files: int
    blobs: int
    index_files: int
    seconds: float
    probe_path: str  # a file of the snapshot, for dump and restore
    probe_content: bytes


def content(rnd: random.Random, number: int) -> bytes:
    """A small file: a text line and some random bytes (compressible in part, like JSON)."""
    head = b'{"upload": %d, "owner": "user-%d", "tags": ["a", "b"]}\n' % (number, number % 97)
    return head + rnd.randbytes(rnd.randint(64, 511) - len(head) % 64)


def build(path: Path, files: int, seed: int) -> Built:
    started = time.perf_counter()
    repo = Repository.init(LocalBackend(str(path)), PASSWORD.encode(), host=HOST)
    rnd = random.Random(seed)
    packer = Packer(repo.master, repo.write_pack, writers=2)
    mtime = repo.clock()
    probe_number = files // 2
    probe_path, probe_content = "", b""
    dirs: list[Node] = []
    blobs = 0

    def store(blob_type: BlobType, data: bytes) -> str:
        nonlocal blobs
        blob_id = hashlib.sha256(data).hexdigest()
        packer.add(encode_blob(repo.master, blob_id, blob_type, data, 3))
        blobs += 1
        if packer.finished_count >= INDEX_EVERY_PACKS:
            repo.save_index(packer.take_finished(), [])
        return blob_id

    try:
        for first in range(0, files, FILES_PER_DIR):
            nodes = []
            for number in range(first, min(first + FILES_PER_DIR, files)):
                data = content(rnd, number)
                name = b"f%07d" % number
                nodes.append(
                    Node(name=name, type="file", mode=0o644, mtime=mtime, atime=mtime,
                         ctime=mtime, size=len(data), content=[store(BlobType.DATA, data)])
                )  # fmt: skip
                if number == probe_number:
                    probe_content = data
                    probe_path = f"/data/d{first // FILES_PER_DIR:05d}/{name.decode()}"
            subtree = store(BlobType.TREE, encode_tree(nodes))
            dirs.append(
                Node(name=b"d%05d" % (first // FILES_PER_DIR), type="dir", mode=0o20000000755,
                     mtime=mtime, atime=mtime, ctime=mtime, subtree=subtree)
            )  # fmt: skip
        data_dir = store(BlobType.TREE, encode_tree(dirs))
        root = store(
            BlobType.TREE,
            encode_tree(
                [Node(name=b"data", type="dir", mode=0o20000000755, mtime=mtime, atime=mtime,
                      ctime=mtime, subtree=data_dir)]
            ),
        )  # fmt: skip
        packer.flush()
    finally:
        packer.close()
    repo.save_index(packer.take_finished(), [])
    repo.save_snapshot(
        Snapshot(time=repo.clock(), tree=root, paths=["/data"], hostname=HOST.hostname,
                 username=HOST.username)
    )  # fmt: skip
    index_files = len(list((path / "index").iterdir()))
    return Built(
        path, files, blobs, index_files, time.perf_counter() - started, probe_path, probe_content
    )


def remember(built: Built) -> None:
    """Note what was built next to it, so `--keep DIR` can measure it again without a build."""
    fields = {**built.__dict__, "path": str(built.path), "probe_content": built.probe_content.hex()}
    (built.path.parent / f"{built.path.name}.json").write_text(json.dumps(fields))


def reuse(path: Path, files: int) -> Built | None:
    note = path.parent / f"{path.name}.json"
    if not note.is_file():
        return None
    fields = json.loads(note.read_text())
    if fields["files"] != files:
        raise BenchError(f"{path} holds {fields['files']:,} files, not {files:,}")
    fields["path"] = Path(fields["path"])
    fields["probe_content"] = bytes.fromhex(fields["probe_content"])
    say(f"reusing the repository built in {path}")
    return Built(**fields)


# ----- measuring ------------------------------------------------------------------------------


def probe(repo_path: str, cache: str | None) -> dict[str, Any]:
    """In this process: open, read the index, look one blob up (run as a child process);
    with the index cache in folder `cache` when given."""
    started = time.perf_counter()
    repo = Repository.open(LocalBackend(repo_path), PASSWORD.encode())
    if cache is not None:
        repo.index_cache = IndexCache(Path(cache))
    opened = time.perf_counter()
    index = repo.index
    loaded = time.perf_counter()
    index.has("00" * 32)  # nothing is deferred past the first lookup
    first = time.perf_counter()
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return {
        "key_s": opened - started,
        "index_s": loaded - opened,
        "first_lookup_s": first - loaded,
        "records": index.record_count(),
        "index_bytes": index.memory_bytes(),
        "peak_rss_kib": hwm,
    }


def run_probe(repo: Path, cache: Path | None = None) -> dict[str, Any]:
    with_cache = ["--probe-cache", str(cache)] if cache is not None else []
    result = subprocess.run(
        [sys.executable, __file__, "--probe", str(repo), *with_cache],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise BenchError(f"probe failed: {result.stderr[-2000:]}")
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def dump_argv(tool: Tool, repo: Path, path: str, cached: bool = False) -> list[str]:
    if tool.name == "restic":
        no_cache = [] if cached else ["--no-cache"]
        return [*tool.exe, "-r", str(repo), *no_cache, "dump", "latest", path]
    return [*tool.exe, "-r", str(repo), "dump", "latest", path]


def restore_argv(tool: Tool, repo: Path, target: Path, path: str) -> list[str]:
    if tool.name == "restic":
        return [*tool.exe, "-r", str(repo), "--no-cache", "restore", "latest",
                "--target", str(target), "--include", path]  # fmt: skip
    return [*tool.exe, "-r", str(repo), "restore", "latest", "--target", str(target),
            "--include", path, "--quiet"]  # fmt: skip


def measure(
    tool: Tool, argv: list[str], work: Path, label: str, cached: bool = False
) -> tuple[float, float, int]:
    """One run; unless `cached`, safehold's local index cache is removed first (restic is
    given --no-cache by the argv builders)."""
    home = work / "home" / tool.name
    home.mkdir(parents=True, exist_ok=True)
    if not cached:
        shutil.rmtree(home / ".cache" / "safehold" / "index", ignore_errors=True)
    log = work / f"{tool.name}-{label}.log"
    usage = run_timed(argv, tool.env(home), None, log, TIMEOUT)
    if usage.exit_code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{tool.name} {label} failed (exit {usage.exit_code}):\n{tail}")
    return usage.wall_s, usage.user_s + usage.sys_s, usage.maxrss_kib


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tools: list[Tool] = [Safehold([sys.executable, "-m", "safehold"])]
    if "restic" in args.tools:
        tools.append(Restic(["restic"]))
        if shutil.which("restic") is None:
            raise BenchError("restic is not installed (or run with --tools safehold)")
    os.environ["PYTHONPATH"] = str(REPO_ROOT / "src")  # the safehold of this checkout
    results: dict[str, Any] = {"files": args.files, "repeats": args.repeats, "cpus": os.cpu_count()}
    repos = {}
    for name, files in (("baseline", min(BASELINE_FILES, args.files)), ("big", args.files)):
        built = reuse(work / name, files)
        if built is None:
            say(f"building the {name} repository: {files:,} files through safehold's writer")
            built = build(work / name, files, seed=1)
            remember(built)
        say(f"  {built.blobs:,} blobs, {built.index_files} index files, {built.seconds:.1f} s")
        repos[name] = built
        results[f"{name}_build"] = {
            "blobs": built.blobs, "index_files": built.index_files, "seconds": built.seconds,
            "repo_bytes": sum(p.stat().st_size for p in built.path.rglob("*") if p.is_file()),
        }  # fmt: skip
    big = repos["big"]
    if len(tools) > 1:
        say("restic check on the big repository")
        check_wall, _, _ = measure(
            tools[1], [*tools[1].exe, "-r", str(big.path), "--no-cache", "check"], work, "check"
        )
        results["restic_check_s"] = check_wall
    rows: dict[str, dict[str, list[float]]] = {}
    for repeat in range(args.repeats):
        order = tools if repeat % 2 == 0 else list(reversed(tools))
        for tool in order:
            for name, built in repos.items():
                wall, cpu, rss = measure(
                    tool, dump_argv(tool, built.path, built.probe_path), work, f"open-{name}"
                )
                row = rows.setdefault(f"{tool.name}/open-{name}", {})
                for key, value in (("wall_s", wall), ("cpu_s", cpu), ("rss_kib", rss)):
                    row.setdefault(key, []).append(value)
            # warm: the cold run above left safehold's cache; restic fills its own first
            if tool.name == "restic" and repeat == 0:
                measure(tool, dump_argv(tool, big.path, big.probe_path, True), work, "fill", True)
            wall, cpu, rss = measure(
                tool, dump_argv(tool, big.path, big.probe_path, True), work, "open-warm", True
            )
            row = rows.setdefault(f"{tool.name}/open-warm", {})
            for key, value in (("wall_s", wall), ("cpu_s", cpu), ("rss_kib", rss)):
                row.setdefault(key, []).append(value)
            target = work / f"restore-{tool.name}-{repeat}"
            wall, cpu, rss = measure(
                tool, restore_argv(tool, big.path, target, big.probe_path), work, "restore"
            )
            restored = target / big.probe_path.lstrip("/")
            if restored.read_bytes() != big.probe_content:
                raise BenchError(f"{tool.name} restored {restored} wrongly")
            others = [p for p in target.rglob("*") if p.is_file() and p != restored]
            if others:
                raise BenchError(f"{tool.name} restored more than the one file: {others[:3]}")
            shutil.rmtree(target)
            row = rows.setdefault(f"{tool.name}/restore", {})
            for key, value in (("wall_s", wall), ("cpu_s", cpu), ("rss_kib", rss)):
                row.setdefault(key, []).append(value)
        probe_cache = work / "probe-cache"
        shutil.rmtree(probe_cache, ignore_errors=True)
        for label, cache in (
            ("probe", None),
            ("probe-cold", probe_cache),
            ("probe-warm", probe_cache),
        ):
            found = run_probe(big.path, cache)
            rows.setdefault(f"safehold/{label}", {})
            for key, value in found.items():
                rows[f"safehold/{label}"].setdefault(key, []).append(float(value))
        shutil.rmtree(probe_cache, ignore_errors=True)
    results["medians"] = {
        row: {key: median(values) for key, values in metrics.items()}
        for row, metrics in rows.items()
    }
    results["rss_method"] = "GNU time %M" if GNU_TIME else "wait4 ru_maxrss"
    return results


def report(results: dict[str, Any]) -> str:
    m = results["medians"]
    blobs = results["big_build"]["blobs"]
    base_blobs = results["baseline_build"]["blobs"]
    tools = [t for t in ("safehold", "restic") if f"{t}/restore" in m]
    lines = [
        f"{results['files']:,} files, {blobs:,} blobs in {results['big_build']['index_files']} "
        f"index files; median of {results['repeats']} repeat(s); {results['cpus']} CPUs.",
        "",
        "| Measure | " + " | ".join(tools) + " |",
        "|---|" + "---:|" * len(tools),
    ]

    def cells(key: str, metric: str, scale: float = 1.0, digits: int = 2) -> str:
        return " | ".join(f"{m[f'{t}/{key}'][metric] * scale:.{digits}f}" for t in tools)

    lines.append(f"| open + dump one file: time (s) | {cells('open-big', 'wall_s')} |")
    lines.append(f"| open + dump one file: CPU (s) | {cells('open-big', 'cpu_s')} |")
    lines.append(
        f"| open + dump one file: peak RSS (MiB) | {cells('open-big', 'rss_kib', 1 / 1024, 0)} |"
    )
    per_blob = " | ".join(
        f"{(m[f'{t}/open-big']['rss_kib'] - m[f'{t}/open-baseline']['rss_kib']) * 1024 / (blobs - base_blobs):.0f}"  # noqa: E501
        for t in tools
    )
    lines.append(f"| RSS per blob (bytes, big - {base_blobs:,}-blob repo) | {per_blob} |")
    lines.append(f"| open + dump, warm cache: time (s) | {cells('open-warm', 'wall_s')} |")
    lines.append(f"| open + dump, warm cache: CPU (s) | {cells('open-warm', 'cpu_s')} |")
    warm_rss = cells("open-warm", "rss_kib", 1 / 1024, 0)
    lines.append(f"| open + dump, warm cache: peak RSS (MiB) | {warm_rss} |")
    lines.append(f"| one-file restore: time (s) | {cells('restore', 'wall_s')} |")
    lines.append(f"| one-file restore: CPU (s) | {cells('restore', 'cpu_s')} |")
    lines.append(
        f"| one-file restore: peak RSS (MiB) | {cells('restore', 'rss_kib', 1 / 1024, 0)} |"
    )
    probe_row = m["safehold/probe"]
    lines += [
        "",
        f"safehold in process: key {probe_row['key_s']:.2f} s, index read "
        f"{probe_row['index_s']:.2f} s (+{probe_row['first_lookup_s']:.2f} s first lookup), "
        f"index arrays {probe_row['index_bytes'] / probe_row['records']:.1f} bytes per blob, "
        f"peak RSS {probe_row['peak_rss_kib'] / 1024:.0f} MiB.",
    ]
    cold, warm = m["safehold/probe-cold"], m["safehold/probe-warm"]
    lines.append(
        f"with the index cache: empty {cold['index_s']:.2f} s (+{cold['first_lookup_s']:.2f} s) "
        f"(decode, sort, write the cache), warm {warm['index_s']:.2f} s "
        f"(+{warm['first_lookup_s']:.2f} s), peak RSS {warm['peak_rss_kib'] / 1024:.0f} MiB."
    )
    if "restic_check_s" in results:
        lines.append(
            f"`restic check` of the repository: passed in {results['restic_check_s']:.1f} s."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="small files (~blobs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tools", default="safehold,restic", help="safehold[,restic]")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--out", type=Path, help="write raw numbers here (JSON)")
    parser.add_argument(
        "--keep", type=Path, help="build the repositories here and keep them (or reuse them)"
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.probe_cache)))
        return 0
    if args.smoke:
        args.files, args.repeats = 3000, 1
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = args.keep
    else:
        work = Path(tempfile.mkdtemp(prefix="safehold-index-bench-"))
    try:
        results = bench(args, work)
    except BenchError as err:
        print(f"index bench failed: {err}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
