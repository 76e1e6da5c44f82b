#!/usr/bin/env python3
"""Benchmark safehold against restic and borg on the seeded web-app dataset.

Per repeat: generate the tree (bench/dataset.py), then run each phase for every
tool before moving on to the next phase - first backup, unchanged re-backup,
(mutate the tree once), backup of the mutated tree, full restore of the latest
snapshot - so every tool backs up the identical tree at the identical path.
Tool order is A B C on odd repeats and C B A on even ones; medians are reported.
Every restore is compared file by file (sha256) with the source tree.

See bench/README.md for what each number means and the fairness rules.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAFEHOLD = REPO_ROOT / ".venv" / "bin" / "safehold"
PASSWORD = "bench-password-not-a-secret"
ALL_TOOLS = ("safehold", "restic", "borg")
PHASES = ("backup-first", "backup-unchanged", "backup-mutated", "restore", "backup-small")
TITLES = {
    "backup-first": "first backup",
    "backup-unchanged": "unchanged re-backup",
    "backup-mutated": "backup after mutation",
    "restore": "full restore (latest)",
    "backup-small": "small files: first backup",
}
MB = 1_000_000
MIB = 1 << 20
SMOKE_SCALE = 0.01
SMOKE_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 4 * 3600.0
#: Size of the generated tree at scale 1.0 (for the free-space check).
FULL_SCALE_BYTES = 2_130_000_000
#: Environment variables that could point a tool at some other repository.
FOREIGN_ENV = ("RESTIC_", "BORG_", "SAFEHOLD_", "PYTHONDONTWRITEBYTECODE")
#: Small-files phase: unique 2-50 kB files (an uploads folder), this many at scale 1.0.
SMALL_FILES_FULL = 200_000


class BenchError(Exception):
    """A command failed, timed out, or restored something that is not bit-exact."""


# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------


class Tool:
    """Command lines for one backup program; subclasses fill them in."""

    name = ""
    password_var = ""

    def __init__(self, exe: Sequence[str]) -> None:
        self.exe = list(exe)

    def env(self, home: Path) -> dict[str, str]:
        """Clean environment with a private HOME, so caches start empty and stay apart."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
        env.update(
            HOME=str(home),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            XDG_STATE_HOME=str(home / ".local" / "state"),
        )
        env[self.password_var] = PASSWORD
        return env

    def init(self, repo: Path) -> list[str]:
        raise NotImplementedError

    def backup(self, repo: Path, source: Path, label: str) -> list[str]:
        raise NotImplementedError

    def restore(self, repo: Path, target: Path, label: str) -> list[str]:
        """Restore the latest snapshot (``label`` names it for tools without "latest")."""
        raise NotImplementedError

    def restore_cwd(self, target: Path) -> Path | None:
        return None

    def version_argv(self) -> list[str]:
        return [*self.exe, "--version"]

    def version(self) -> str:
        try:
            out = subprocess.run(
                self.version_argv(), capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if out.returncode == 0 and lines else "unknown"

    def available(self) -> bool:
        first = self.exe[0]
        return shutil.which(first) is not None or os.access(first, os.X_OK)


class Safehold(Tool):
    name = "safehold"
    password_var = "SAFEHOLD_PASSWORD"

    def init(self, repo: Path) -> list[str]:
        return [*self.exe, "-r", str(repo), "init"]

    def backup(self, repo: Path, source: Path, label: str) -> list[str]:
        return [*self.exe, "-r", str(repo), "backup", str(source), "--quiet"]

    def restore(self, repo: Path, target: Path, label: str) -> list[str]:
        return [*self.exe, "-r", str(repo), "restore", "latest", "--target", str(target), "--quiet"]


class Restic(Tool):
    name = "restic"
    password_var = "RESTIC_PASSWORD"

    def init(self, repo: Path) -> list[str]:
        return [*self.exe, "-r", str(repo), "init", "--repository-version", "2"]

    def backup(self, repo: Path, source: Path, label: str) -> list[str]:
        return [*self.exe, "-r", str(repo), "--compression", "auto", "backup", str(source)]

    def restore(self, repo: Path, target: Path, label: str) -> list[str]:
        return [*self.exe, "-r", str(repo), "restore", "latest", "--target", str(target)]

    def version_argv(self) -> list[str]:
        return [*self.exe, "version"]


class Borg(Tool):
    name = "borg"
    password_var = "BORG_PASSPHRASE"

    def env(self, home: Path) -> dict[str, str]:
        env = super().env(home)
        env["BORG_BASE_DIR"] = str(home)
        env["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "yes"
        return env

    def init(self, repo: Path) -> list[str]:
        return [*self.exe, "init", "-e", "repokey-blake2", str(repo)]

    def backup(self, repo: Path, source: Path, label: str) -> list[str]:
        return [*self.exe, "create", "--compression", "zstd,3", f"{repo}::{label}", str(source)]

    def restore(self, repo: Path, target: Path, label: str) -> list[str]:
        return [*self.exe, "extract", f"{repo}::{label}"]

    def restore_cwd(self, target: Path) -> Path | None:
        return target  # borg extracts into the current directory


BEFORE = "safehold-before"


def make_tools(
    names: Sequence[str], safehold_cmd: str, before_cmd: str | None = None
) -> list[Tool]:
    """The tools in `names` order; with `before_cmd`, a second safehold (another checkout)
    named `safehold-before` first, so before and after run in the same rotation."""
    classes: dict[str, type[Tool]] = {"safehold": Safehold, "restic": Restic, "borg": Borg}
    exes = {"safehold": shlex.split(safehold_cmd), "restic": ["restic"], "borg": ["borg"]}
    tools = [classes[n](exes[n]) for n in names]
    if before_cmd:
        before = Safehold(shlex.split(before_cmd))
        before.name = BEFORE
        tools.insert(0, before)
    return tools


# --------------------------------------------------------------------------
# Measuring, warming, hashing
# --------------------------------------------------------------------------


@dataclass
class Measurement:
    repeat: int
    tool: str
    phase: str
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    exit_code: int
    data_bytes: int  # logical bytes the phase covers; MB/s = data_bytes / wall_s
    tree_pss_kib: int = 0  # peak PSS summed over the command's process tree (0: not sampled)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


@dataclass
class Usage:
    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    tree_pss_kib: int = 0


def find_gnu_time() -> str | None:
    """Path of GNU time, if installed (``/usr/bin/time``, not the shell keyword)."""
    for candidate in ("/usr/bin/time", shutil.which("gtime")):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        try:
            out = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "GNU" in out.stdout + out.stderr:
            return candidate
    return None


GNU_TIME = find_gnu_time()
RSS_METHOD = (
    "GNU time %M (ru_maxrss of the command)"
    if GNU_TIME
    else "wait4 ru_maxrss (inflated: includes the harness's RSS at fork)"
)


def read_maxrss(path: Path) -> int | None:
    """Last line of GNU time's ``-o`` file (it prepends notes like "exited with status")."""
    try:
        lines = path.read_text().split()
        return int(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


TREE_SAMPLE_S = 0.05


class TreeMemory:
    """Peak memory of a whole process tree, sampled: the sum of every process's PSS.

    GNU time's %M is the largest single process's peak RSS: a tool that forks workers
    (safehold's readers and restore workers) looks smaller than it is, and summing RSS
    counts the pages the workers share with their parent once per process. PSS splits each
    shared page between its sharers, so the sum is the tree's real footprint. The tree is
    every process of the command's session (the harness starts it with a session of its
    own). Sampled every TREE_SAMPLE_S from a thread of the harness (Linux only: 0 elsewhere);
    a peak shorter than that can be missed."""

    def __init__(self, session: int) -> None:
        self.session = session
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        if Path("/proc/self/smaps_rollup").exists():
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(TREE_SAMPLE_S):
            self.peak_kib = max(self.peak_kib, self.sample())

    def sample(self) -> int:
        total = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _session_of(entry.name) == self.session:
                total += _pss_kib(entry.name)
        return total


def _session_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[3])  # after "pid (comm)": state ppid pgrp session
    except (OSError, IndexError, ValueError):
        return None


def _pss_kib(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def run_timed(
    argv: list[str], env: dict[str, str], cwd: Path | None, log: Path, timeout: float
) -> Usage:
    """Run ``argv`` with its output appended to ``log`` and measure it.

    CPU seconds come from ``os.wait4`` on our child. Peak RSS cannot: Linux
    carries the parent's high-water RSS over fork+exec into the child's
    ``ru_maxrss``, so the harness's own ~100 MiB would show up as every tool's
    floor. GNU time forks the command from a ~1 MiB process and reports its
    ``ru_maxrss`` instead (``-f %M``); without GNU time we fall back to wait4.
    """
    rss_file = log.with_suffix(".rss")
    full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), "--", *argv] if GNU_TIME else argv
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    with log.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                full, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise BenchError(f"cannot run {argv[0]}: {exc}") from exc
        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            with TreeMemory(proc.pid) as tree:
                _, status, ru = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
    if timed_out.is_set():
        raise BenchError(f"timed out after {timeout:.0f} s: {shlex.join(argv)}")
    maxrss = read_maxrss(rss_file) if GNU_TIME else None
    return Usage(
        proc.returncode, wall, ru.ru_utime, ru.ru_stime, maxrss or ru.ru_maxrss, tree.peak_kib
    )


def iter_files(root: Path) -> Iterable[Path]:
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(dirpath, name)


def warm(paths: Iterable[Path]) -> int:
    """Read every file under ``paths`` into the page cache; returns bytes read.

    The host evicts the cache within a minute, so this runs right before every
    timed command: each tool then starts with hot input instead of whatever the
    previous tool happened to leave behind.
    """
    buf = bytearray(MIB)
    total = 0
    for root in paths:
        for path in iter_files(root) if root.exists() else ():
            try:
                with path.open("rb", buffering=0) as f:
                    while n := f.readinto(buf):
                        total += n
            except OSError:
                continue  # sockets, vanished lock files: nothing to warm
    return total


def manifest(root: Path) -> dict[str, str]:
    """sha256 of every regular file, keyed by POSIX path relative to ``root``."""
    out: dict[str, str] = {}
    for path in iter_files(root):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as f:
            out[path.relative_to(root).as_posix()] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def file_meta(root: Path) -> dict[str, tuple[int, int]]:
    """(permission bits, whole-second mtime) of every file, keyed like ``manifest``."""
    out: dict[str, tuple[int, int]] = {}
    for path in iter_files(root):
        st = path.lstat()
        out[path.relative_to(root).as_posix()] = (stat.S_IMODE(st.st_mode), int(st.st_mtime))
    return out


def tree_bytes(root: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) under ``root``, like ``du -sb`` / ``du -sB1``."""
    apparent = allocated = 0
    for path in iter_files(root) if root.exists() else ():
        st = path.lstat()
        apparent += st.st_size
        allocated += st.st_blocks * 512
    return apparent, allocated


def find_restored_root(target: Path, source: Path, probe: str) -> Path:
    """Where a tool put the restored tree: under the absolute path, the basename, or flat."""
    candidates = [target / source.relative_to(source.anchor), target / source.name, target]
    for candidate in candidates:
        if (candidate / probe).is_file():
            return candidate
    raise BenchError(f"restored tree not found under {target} (no {probe} in {candidates})")


def compare(expected: dict[str, str], got: dict[str, str]) -> str | None:
    """Describe how ``got`` differs from ``expected``, or None if identical."""
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    differ = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if not (missing or extra or differ):
        return None
    sample = ", ".join((missing + extra + differ)[:5])
    return (
        f"{len(missing)} missing, {len(extra)} extra, {len(differ)} with different content "
        f"(e.g. {sample})"
    )


def log_tail(log: Path, lines: int = 25) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


@dataclass
class Config:
    scale: float
    seed: int
    repeat: int
    timeout: float
    keep: bool
    small_files: int = 0


class Bench:
    """One benchmark run in ``run_dir``; measurements, sizes and errors accumulate here."""

    def __init__(self, cfg: Config, tools: list[Tool], run_dir: Path) -> None:
        self.cfg = cfg
        self.tools = tools
        self.run_dir = run_dir
        self.data = run_dir / "data"
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.expected: dict[str, dict[str, str]] = {}
        self.expected_meta: dict[str, tuple[int, int]] = {}
        self.warnings: list[dict[str, Any]] = []
        self.measurements: list[Measurement] = []
        self.sizes: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.datasets: list[dict[str, Any]] = []
        self.failed: set[str] = set()

    # --- per-tool paths ---------------------------------------------------

    def tool_dir(self, repeat: int, tool: Tool) -> Path:
        return self.run_dir / f"repeat-{repeat + 1}" / tool.name

    def repo(self, repeat: int, tool: Tool) -> Path:
        return self.tool_dir(repeat, tool) / "repo"

    def home(self, repeat: int, tool: Tool) -> Path:
        return self.tool_dir(repeat, tool) / "home"

    # --- dataset ------------------------------------------------------------

    def snapshot_tree(self, repeat: int, state: str, seconds: float) -> None:
        """Hash the tree; repeats must see exactly the tree the first repeat saw."""
        files = manifest(self.data)
        size = sum(p.stat().st_size for p in iter_files(self.data))
        self.datasets.append(
            {"repeat": repeat + 1, "state": state, "files": len(files), "bytes": size,
             "seconds": round(seconds, 2)}
        )  # fmt: skip
        say(f"[{repeat + 1}] {state}: {len(files)} files, {size / MB:.1f} MB in {seconds:.1f} s")
        self.expected_meta = file_meta(self.data)
        if state not in self.expected:
            self.expected[state] = files
        elif (diff := compare(self.expected[state], files)) is not None:
            raise BenchError(f"dataset {state} differs between repeats: {diff}")

    def generate(self, repeat: int) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        t0 = time.perf_counter()
        dataset.generate(self.data, self.cfg.seed, self.cfg.scale)
        self.snapshot_tree(repeat, "day0", time.perf_counter() - t0)

    def mutate(self, repeat: int) -> None:
        t0 = time.perf_counter()
        dataset.mutate(self.data, self.cfg.seed + 1)
        self.snapshot_tree(repeat, "day1", time.perf_counter() - t0)

    def data_bytes(self) -> int:
        return self.datasets[-1]["bytes"] if self.datasets else 0

    # --- running one step ---------------------------------------------------

    def step(
        self,
        repeat: int,
        tool: Tool,
        phase: str,
        argv: list[str],
        warm_paths: list[Path],
        cwd: Path | None = None,
    ) -> bool:
        """Sync, warm, run and record one command; False (and tool benched) on failure."""
        if tool.name in self.failed:
            return False
        home = self.home(repeat, tool)
        home.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"r{repeat + 1}-{tool.name}-{phase}.log"
        os.sync()  # don't let the previous command's writeback land in this one's time
        warm(warm_paths)
        try:
            u = run_timed(argv, tool.env(home), cwd, log, self.cfg.timeout)
            if u.exit_code != 0:
                raise BenchError(f"exit code {u.exit_code}: {shlex.join(argv)}")
        except BenchError as exc:
            self.fail(repeat, tool, phase, str(exc), log)
            return False
        m = Measurement(
            repeat + 1, tool.name, phase, round(u.wall_s, 3), round(u.user_s, 3),
            round(u.sys_s, 3), u.maxrss_kib, u.exit_code,
            0 if phase.startswith("init") else self.data_bytes(), u.tree_pss_kib,
        )  # fmt: skip
        self.measurements.append(m)
        rate = f"{m.data_bytes / MB / u.wall_s:8.1f}" if m.data_bytes and u.wall_s else "       -"
        say(
            f"[{repeat + 1}] {tool.name:8} {phase:17} {u.wall_s:8.2f} s {rate} MB/s  "
            f"cpu {m.cpu_s:7.2f} s  rss {m.maxrss_kib / 1024:7.1f} MiB  "
            f"tree pss {m.tree_pss_kib / 1024:7.1f} MiB"
        )
        return True

    def fail(self, repeat: int, tool: Tool, phase: str, message: str, log: Path | None) -> None:
        self.failed.add(tool.name)
        self.errors.append({"repeat": repeat + 1, "tool": tool.name, "phase": phase,
                            "message": message})  # fmt: skip
        say(f"[{repeat + 1}] FAILED {tool.name} {phase}: {message}")
        if log is not None:
            say(log_tail(log))

    def record_size(self, repeat: int, tool: Tool, when: str) -> None:
        if tool.name in self.failed:
            return
        repo_apparent, repo_alloc = tree_bytes(self.repo(repeat, tool))
        cache_apparent, _ = tree_bytes(self.home(repeat, tool))
        self.sizes.append(
            {"repeat": repeat + 1, "tool": tool.name, "when": when,
             "repo_bytes": repo_apparent, "repo_disk_bytes": repo_alloc,
             "client_cache_bytes": cache_apparent}
        )  # fmt: skip

    # --- phases -------------------------------------------------------------

    def backup_phase(self, repeat: int, order: list[Tool], phase: str) -> None:
        for tool in order:
            repo = self.repo(repeat, tool)
            argv = tool.backup(repo, self.data, phase)
            paths = [self.data, repo, self.home(repeat, tool)]
            if self.step(repeat, tool, phase, argv, paths) and phase != "backup-unchanged":
                self.record_size(
                    repeat, tool, "after-first" if phase == "backup-first" else "after-mutated"
                )

    def restore_phase(self, repeat: int, order: list[Tool]) -> None:
        """Every tool's restore, then every restored tree removed: a removal right before
        the next tool's restore made that restore pay for it (ext4 without a journal skips,
        inode by inode, the inodes freed in the last 60 s, or 360 s while their inode table
        block is dirty: file creation measured 10-20x slower), and with A B C / C B A the
        middle tool always came right after one."""
        targets = []
        for tool in order:
            repo, target = self.repo(repeat, tool), self.tool_dir(repeat, tool) / "restore"
            target.mkdir(parents=True, exist_ok=True)
            targets.append(target)
            argv = tool.restore(repo, target, "backup-mutated")
            paths = [repo, self.home(repeat, tool)]
            if self.step(repeat, tool, "restore", argv, paths, cwd=tool.restore_cwd(target)):
                self.verify(repeat, tool, target)
        if not self.cfg.keep:
            for target in targets:
                shutil.rmtree(target, ignore_errors=True)

    def small_phase(self, repeat: int, order: list[Tool]) -> None:
        """Many small files: a first backup of an uploads folder of unique 2-50 kB files into
        a new repository per tool (per-file overhead, not bytes, is what it measures)."""
        if self.cfg.small_files <= 0:
            return
        small = self.run_dir / "small"
        shutil.rmtree(small, ignore_errors=True)
        t0 = time.perf_counter()
        dataset.generate_small(small, self.cfg.seed, self.cfg.small_files)
        files = list(iter_files(small))
        size = sum(p.stat().st_size for p in files)
        self.datasets.append(
            {"repeat": repeat + 1, "state": "small", "files": len(files), "bytes": size,
             "seconds": round(time.perf_counter() - t0, 2)}
        )  # fmt: skip
        say(f"[{repeat + 1}] small files: {len(files)} files, {size / MB:.1f} MB")
        for tool in order:
            repo = self.tool_dir(repeat, tool) / "repo-small"
            if self.step(repeat, tool, "init-small", tool.init(repo), []):
                argv = tool.backup(repo, small, "backup-small")
                self.step(repeat, tool, "backup-small", argv, [small, repo])
            if not self.cfg.keep:
                shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(small, ignore_errors=True)

    def verify(self, repeat: int, tool: Tool, target: Path) -> None:
        try:
            root = find_restored_root(target, self.data, dataset.SQL_DUMP[0])
            diff = compare(self.expected["day1"], manifest(root))
            if diff is not None:
                raise BenchError(f"restore is NOT bit-exact: {diff}")
        except BenchError as exc:
            self.fail(repeat, tool, "verify", str(exc), None)
            return
        restored_meta = file_meta(root)
        off = sorted(k for k, v in self.expected_meta.items() if restored_meta.get(k) != v)
        if off:  # not a failure: content is what the benchmark promises
            msg = f"{len(off)} file(s) restored with other mode/mtime, e.g. {off[0]}"
            self.warnings.append({"repeat": repeat + 1, "tool": tool.name, "message": msg})
            say(f"[{repeat + 1}] WARNING {tool.name}: {msg}")
        files = len(self.expected["day1"])
        say(f"[{repeat + 1}] {tool.name:8} restore verified bit-exact ({files} files)")

    def run_repeat(self, repeat: int) -> None:
        order = list(self.tools) if repeat % 2 == 0 else list(reversed(self.tools))
        say(f"[{repeat + 1}] tool order: {' '.join(t.name for t in order)}")
        self.failed = set()
        self.generate(repeat)
        for tool in order:
            self.repo(repeat, tool).parent.mkdir(parents=True, exist_ok=True)
            self.step(repeat, tool, "init", tool.init(self.repo(repeat, tool)), [])
        self.backup_phase(repeat, order, "backup-first")
        self.backup_phase(repeat, order, "backup-unchanged")
        self.mutate(repeat)
        self.backup_phase(repeat, order, "backup-mutated")
        self.restore_phase(repeat, order)
        self.small_phase(repeat, order)
        if not self.cfg.keep:
            shutil.rmtree(self.run_dir / f"repeat-{repeat + 1}", ignore_errors=True)

    def run(self) -> None:
        for repeat in range(self.cfg.repeat):
            self.run_repeat(repeat)


# --------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summarize_phase(ms: list[Measurement]) -> dict[str, Any] | None:
    """Medians of one tool's runs of one phase (MB/s from the median time)."""
    wall = median_or_none([m.wall_s for m in ms])
    if wall is None:
        return None
    data = median_or_none([m.data_bytes for m in ms]) or 0
    return {
        "wall_s": round(wall, 3),
        "mb_per_s": round(data / MB / wall, 2) if data and wall > 0 else None,
        "cpu_s": rounded(median_or_none([m.cpu_s for m in ms]), 3),
        "maxrss_mib": rounded(median_or_none([m.maxrss_kib / 1024 for m in ms]), 1),
        "tree_pss_mib": rounded(
            median_or_none([m.tree_pss_kib / 1024 for m in ms if m.tree_pss_kib]), 1
        ),
        "runs": len(ms),
    }


def summarize(bench: Bench) -> dict[str, dict[str, Any]]:
    """Median over repeats of every metric, per tool and phase, plus repository sizes."""
    out: dict[str, dict[str, Any]] = {}
    for tool in bench.tools:
        entry: dict[str, Any] = {}
        for phase in ("init", *PHASES):
            runs = [m for m in bench.measurements if m.tool == tool.name and m.phase == phase]
            entry[phase] = summarize_phase(runs)
        for when in ("after-first", "after-mutated"):
            sizes = [s for s in bench.sizes if s["tool"] == tool.name and s["when"] == when]
            for key in ("repo_bytes", "repo_disk_bytes", "client_cache_bytes"):
                value = median_or_none([s[key] for s in sizes])
                entry[f"{key}_{when}"] = None if value is None else round(value)
        out[tool.name] = entry
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def short_version(tool: str, version: str) -> str:
    """Shorten e.g. "restic 0.14.0 compiled with go1.19.8 on linux/amd64" to "restic 0.14.0"."""
    found = re.search(r"\d+(?:\.\d+)+\S*", version)
    return f"{tool} {found.group(0) if found else version}"


METRICS = (
    ("time (s)", "wall_s", "s"),
    ("throughput (MB/s)", "mb_per_s", "MB/s"),
    ("CPU user+sys (s)", "cpu_s", "s"),
    ("peak RSS (MiB)", "maxrss_mib", "MiB"),
    ("peak PSS, process tree (MiB)", "tree_pss_mib", "MiB"),
)
SIZES = (
    ("after-first", "after first backup (MB)"),
    ("after-mutated", "after mutated backup (MB)"),
)


def table_row(group: str, label: str, cells: Iterable[str]) -> str:
    return f"| {group} | {label} | " + " | ".join(cells) + " |"


def markdown_intro(meta: dict[str, Any], tools: list[str]) -> str:
    day0 = meta["dataset"].get("day0", {})
    day1 = meta["dataset"].get("day1", {})
    versions = ", ".join(short_version(t, meta["tools"][t]["version"]) for t in tools)
    small = meta["dataset"].get("small")
    small_text = (
        f"Small files: {small['files']:,} unique files of 2-50 kB, {small['bytes'] / MB:,.1f} MB. "
        if small
        else ""
    )
    return (
        f"Dataset: seed {meta['seed']}, scale {meta['scale']:g}: "
        f"{day0.get('files', 0):,} files, {day0.get('bytes', 0) / MB:,.1f} MB "
        f"(after mutation {day1.get('files', 0):,} files, {day1.get('bytes', 0) / MB:,.1f} MB). "
        f"{small_text}Median of {meta['repeat']} run(s); {meta['cpus']} CPUs; {versions}."
    )


def markdown(
    summary: dict[str, dict[str, Any]], meta: dict[str, Any], errors: list[dict[str, Any]]
) -> str:
    """Phase rows x tool columns, ready to paste into docs/benchmarks.md."""
    tools = list(summary)
    lines = [
        markdown_intro(meta, tools),
        "",
        table_row("Phase", "Metric", tools),
        "|---|---|" + "---:|" * len(tools),
    ]
    for phase in PHASES:
        if phase == "backup-small" and not meta["dataset"].get("small"):
            continue  # the phase was skipped (--small-files 0)
        for i, (label, key, unit) in enumerate(METRICS):
            cells = [
                "FAILED" if summary[t][phase] is None else fmt(summary[t][phase][key], unit)
                for t in tools
            ]
            lines.append(table_row(TITLES[phase] if i == 0 else "", label, cells))
    for i, (when, label) in enumerate(SIZES):
        sizes = [summary[t][f"repo_bytes_{when}"] for t in tools]
        cells = ["n/a" if b is None else fmt(b / MB, "MB") for b in sizes]
        lines.append(table_row("repository size" if i == 0 else "", label, cells))
    for err in errors:
        where = " ".join(str(err[k]) for k in ("tool", "phase") if k in err)
        lines.append(f"\n**FAILED** {where}: {err['message']}")
    return "\n".join(lines) + "\n"


def build_meta(cfg: Config, tools: list[Tool], bench: Bench | None) -> dict[str, Any]:
    datasets: dict[str, Any] = {}
    for d in bench.datasets if bench else []:
        datasets.setdefault(d["state"], d)  # first repeat's numbers
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rss_method": RSS_METHOD,
        "scale": cfg.scale,
        "seed": cfg.seed,
        "mutate_seed": cfg.seed + 1,
        "repeat": cfg.repeat,
        "dataset": datasets,
        "dataset_runs": bench.datasets if bench else [],
        "tools": {t.name: {"version": t.version(), "command": t.exe} for t in tools},
    }


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def check_space(parent: Path, scale: float, tools: int) -> None:
    """Warn if the scratch filesystem looks too small: tree + repos + one restore."""
    need = FULL_SCALE_BYTES * scale * (2.2 + 0.8 * tools)
    free = shutil.disk_usage(parent).free
    if free < need:
        say(f"warning: {parent} has {free / 1e9:.1f} GB free; this run needs ~{need / 1e9:.1f} GB")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark safehold vs restic vs borg.")
    p.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma list (default: all)")
    p.add_argument(
        "--safehold",
        default=None,
        metavar="CMD",
        help=f"safehold command (default: {DEFAULT_SAFEHOLD} if present, else safehold)",
    )
    p.add_argument("--scale", type=float, default=1.0, help="dataset scale (1.0 = ~2.1 GB)")
    p.add_argument("--seed", type=int, default=1, help="dataset seed (mutation uses seed+1)")
    p.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the scratch directory (default: /tmp)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep repos, restores and logs")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="JSON results file")
    p.add_argument("--timeout", type=float, default=None, help="seconds per command")
    p.add_argument(
        "--small-files",
        type=int,
        default=None,
        metavar="N",
        help=f"files in the small-files phase (default: {SMALL_FILES_FULL:,} x scale; 0: skip)",
    )
    p.add_argument(
        "--before",
        default=None,
        metavar="CMD",
        help=f"also run this safehold command (e.g. an older checkout: 'env PYTHONPATH=OLD/src "
        f"python -m safehold') as the tool {BEFORE}, in the same rotation",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"scale {SMOKE_SCALE}, 1 repeat, {SMOKE_TIMEOUT:.0f} s per-command timeout",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.scale, args.repeat = SMOKE_SCALE, 1
        args.timeout = args.timeout or SMOKE_TIMEOUT
    args.timeout = args.timeout or DEFAULT_TIMEOUT
    if args.small_files is None:
        args.small_files = round(SMALL_FILES_FULL * args.scale)
    if args.safehold is None:
        args.safehold = str(DEFAULT_SAFEHOLD) if DEFAULT_SAFEHOLD.exists() else "safehold"
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_TOOLS))
    if unknown or not names or len(set(names)) != len(names):
        p.error(f"--tools: give distinct names from {', '.join(ALL_TOOLS)}")
    if args.repeat < 1 or args.scale <= 0:
        p.error("--repeat must be >= 1 and --scale > 0")
    args.tool_names = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = make_tools(args.tool_names, args.safehold, args.before)
    missing = [t.name for t in tools if not t.available()]
    if missing:
        say(f"not found: {', '.join(missing)} (see --safehold, or leave it out with --tools)")
        return 2
    cfg = Config(args.scale, args.seed, args.repeat, args.timeout, args.keep, args.small_files)
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    check_space(parent, cfg.scale, len(tools))
    run_dir = Path(tempfile.mkdtemp(prefix="safehold-bench-", dir=parent))
    say(f"scratch directory: {run_dir}")
    bench = Bench(cfg, tools, run_dir)
    try:
        bench.run()
    except BenchError as exc:
        bench.errors.append({"message": str(exc)})
        say(f"FAILED: {exc}")
    finally:
        if args.keep:
            say(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    meta = build_meta(cfg, tools, bench)
    summary = summarize(bench)
    results = {"meta": meta, "summary": summary, "errors": bench.errors,
               "warnings": bench.warnings,
               "measurements": [asdict(m) for m in bench.measurements],
               "repo_sizes": bench.sizes}  # fmt: skip
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results written to {args.out}")
    print(markdown(summary, meta, bench.errors))
    if bench.errors:
        say(f"{len(bench.errors)} failure(s):")
        for err in bench.errors:
            say(f"  - {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
