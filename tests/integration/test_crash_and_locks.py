"""Crashes, concurrency, locks and corruption, with real processes and real files.

A `safehold backup` is killed with SIGKILL at several moments; two backups run at once; locks
held by live safehold and restic processes (and by processes on another host) block prune;
bytes flipped in a pack or an index file are found and named.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from runners import make_env, restic, safehold, snapshot_ids
from torture import build_torture_tree, compare_trees, restored_root

from safehold.backends.local import LocalBackend
from safehold.repo.clock import Host
from safehold.repo.format import FileType, object_name
from safehold.repo.gotypes import GoTime
from safehold.repo.lock import Lock
from safehold.repo.repository import Repository

MIB = 1024 * 1024


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return make_env(tmp_path / "restic-cache")


def _open(repo: Path, env: dict[str, str], host: Host | None = None) -> Repository:
    return Repository.open(LocalBackend(repo), env["SAFEHOLD_PASSWORD"].encode(), host=host)


def _random_files(directory: Path, count: int, size: int, seed: int) -> None:
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    for number in range(count):
        (directory / f"blob-{number:03d}.bin").write_bytes(rng.randbytes(size))


def _packs(repo: Path) -> list[str]:
    return [
        name
        for sub in sorted(os.listdir(repo / "data"))
        for name in os.listdir(repo / "data" / sub)
        if not name.startswith(".tmp-")
    ]


def _temp_files(repo: Path) -> list[str]:
    return [
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(repo)
        for name in names
        if name.startswith(".tmp-")
    ]


def _spawn_safehold(env: dict[str, str], *args: str | os.PathLike[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold", *map(os.fspath, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], limit: float = 60) -> bool:
    """SIGKILL `proc` as soon as `ready()`; False if it exited on its own first."""
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the condition to kill at never came"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return proc.returncode == -signal.SIGKILL


def test_kill_9_during_backup_leaves_a_repository_that_heals(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    earlier_src = tmp_path / "earlier"
    build_torture_tree(earlier_src, big_files=False)
    safehold(env, "-r", repo, "backup", earlier_src)
    (earlier_snapshot,) = snapshot_ids(env, repo)

    big = tmp_path / "big"
    _random_files(big, 30, 5 * MIB, seed=11)  # 150 MiB of incompressible data
    packs_before = len(_packs(repo))

    # kill moments: holding only the lock; after 1, 3 and 6 new packs
    def locks() -> list[str]:
        return [name for name in os.listdir(repo / "locks") if not name.startswith(".tmp-")]

    def lock_exists() -> bool:
        return bool(locks())

    def packs_at_least(count: int) -> Callable[[], bool]:
        return lambda: len(_packs(repo)) >= packs_before + count

    killed = 0
    for ready in (lock_exists, packs_at_least(1), packs_at_least(3), packs_at_least(6)):
        proc = _spawn_safehold(env, "-r", repo, "backup", big)
        if _kill_when(proc, ready):
            killed += 1
        else:
            assert proc.returncode == 0, proc.stderr
            pytest.fail("the backup finished before it could be killed: make the tree bigger")
        packs_before = len(_packs(repo))
        # after every kill: no errors (unreferenced packs are only warnings), nothing new
        proc_check = safehold(env, "-r", repo, "check")
        assert "error" not in proc_check.stderr
        assert snapshot_ids(env, repo) == [earlier_snapshot]
    assert killed == 4
    assert len(locks()) == 4  # the dead processes' locks are still there

    orphans = len(_packs(repo)) - 2
    assert orphans >= 6
    proc_check = safehold(env, "-r", repo, "check")
    assert proc_check.stderr.count("not referenced by any index") == orphans

    # the earlier snapshot restores bit-exact
    target = tmp_path / "restore-earlier"
    safehold(env, "-r", repo, "restore", earlier_snapshot, "--target", target)
    assert compare_trees(earlier_src, restored_root(target, earlier_src)) == []

    # restic agrees that the dead processes' locks are stale, and finds no error
    restic(env, "-r", repo, "unlock")
    assert locks() == []
    restic(env, "-r", repo, "check")

    # the next backup succeeds despite the leftovers, and restores exactly
    safehold(env, "-r", repo, "backup", big)
    target = tmp_path / "restore-big"
    safehold(env, "-r", repo, "restore", "latest", "--target", target)
    assert compare_trees(big, restored_root(target, big)) == []

    # a stale lock of a killed process does not block an exclusive prune either
    proc = _spawn_safehold(env, "-r", repo, "backup", big, "--force")
    assert _kill_when(proc, packs_at_least(1))
    # a kill during a pack's write leaves its temp file (whether ours did depends on timing)
    half_written = repo / "data" / "ab" / f".tmp-{'ab' * 32}-0badc0de"
    half_written.write_bytes(os.urandom(100_000))
    proc = safehold(env, "-r", repo, "prune")
    assert "prune done" in proc.stdout
    assert _temp_files(repo) == []  # half-written packs of the killed processes are gone too
    proc_check = safehold(env, "-r", repo, "check", "--read-data")
    assert proc_check.stderr == ""
    assert "no errors were found" in proc_check.stdout
    restic(env, "-r", repo, "unlock")
    proc = restic(env, "-r", repo, "check", "--read-data")
    assert "additional files" not in proc.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_a_backup_exits_130_quietly(
    tmp_path: Path, env: dict[str, str], signum: int
) -> None:
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    big = tmp_path / "big"
    _random_files(big, 64, 5 * MIB, seed=12)  # long enough to be interrupted mid-way
    proc = _spawn_safehold(env, "-r", repo, "backup", big)
    deadline = time.monotonic() + 60
    while len(_packs(repo)) < 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "exception calling callback" not in stderr, stderr
    assert "error: interrupted" in stderr
    assert os.listdir(repo / "locks") == []  # released on the way out
    assert snapshot_ids(env, repo) == []
    check = safehold(env, "-r", repo, "check", "--read-data")
    assert "no errors were found" in check.stdout


def test_two_concurrent_backups_both_succeed(tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    sources = [tmp_path / "one", tmp_path / "two"]
    shared = random.Random(5).randbytes(3 * MIB)  # the same content in both: duplicate blobs
    for number, src in enumerate(sources):
        build_torture_tree(src, big_files=False)
        _random_files(src / "random", 8, 2 * MIB, seed=number)
        (src / "shared.bin").write_bytes(shared)

    procs = [_spawn_safehold(env, "-r", repo, "backup", src, "--json") for src in sources]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, results, strict=True):
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["complete"] is True
    assert len(snapshot_ids(env, repo)) == 2

    listing = json.loads(safehold(env, "-r", repo, "snapshots", "--json").stdout)
    for src in sources:
        (snap,) = [s["id"] for s in listing if s["paths"] == [str(src)]]
        target = tmp_path / f"restore-{src.name}"
        safehold(env, "-r", repo, "restore", snap, "--target", target)
        assert compare_trees(src, restored_root(target, src)) == []

    proc = safehold(env, "-r", repo, "check", "--read-data")
    assert proc.stderr == ""
    restic(env, "-r", repo, "check", "--read-data")
    safehold(env, "-r", repo, "prune")
    restic(env, "-r", repo, "check", "--read-data")
    safehold(env, "-r", repo, "check", "--read-data")


_HOLD_LOCK = """
import sys
from safehold.backends.local import LocalBackend
from safehold.repo.repository import Repository
repo = Repository.open(LocalBackend(sys.argv[1]), sys.argv[2].encode())
with repo.locked(exclusive=sys.argv[3] == "exclusive"):
    print("locked", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""


def _hold_lock(repo: Path, env: dict[str, str], kind: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(repo), env["SAFEHOLD_PASSWORD"], kind],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    stdout, _ = proc.communicate(input="", timeout=30)
    assert proc.returncode == 0
    assert stdout == "released\n"


def test_prune_is_refused_while_a_live_process_holds_a_lock(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    _random_files(src, 3, 10_000, seed=1)
    safehold(env, "-r", repo, "init")
    safehold(env, "-r", repo, "backup", src)

    holder = _hold_lock(repo, env, "shared")
    try:
        proc = safehold(env, "-r", repo, "prune", expect=11)
        assert f"PID {holder.pid}" in proc.stderr
        assert "shared lock" in proc.stderr
        assert "hint:" in proc.stderr
        # shared with shared is fine: another backup and a check run alongside
        safehold(env, "-r", repo, "backup", src)
        safehold(env, "-r", repo, "check")
        # `unlock` leaves a live process's lock alone
        safehold(env, "-r", repo, "unlock")
        safehold(env, "-r", repo, "prune", expect=11)
        # restic honours safehold's lock too
        proc = restic(env, "-r", repo, "prune", expect=None)
        assert proc.returncode != 0
        assert "locked" in proc.stderr
    finally:
        _release(holder)
    assert os.listdir(repo / "locks") == []
    safehold(env, "-r", repo, "prune")

    holder = _hold_lock(repo, env, "exclusive")
    try:
        proc = safehold(env, "-r", repo, "backup", src, expect=11)
        assert f"exclusive lock by PID {holder.pid}" in proc.stderr
        safehold(env, "-r", repo, "snapshots")  # listing takes no lock
    finally:
        _release(holder)
    safehold(env, "-r", repo, "backup", src)


def _written_locks(repo: Path) -> list[Path]:
    """Non-empty lock files; restic's `-tmp-` files may be renamed away between list and stat."""
    found = []
    for path in (repo / "locks").iterdir():
        try:
            if path.stat().st_size > 0 and "-tmp-" not in path.name:
                found.append(path)
        except FileNotFoundError:
            continue
    return found


def test_prune_is_refused_while_restic_holds_a_lock(tmp_path: Path, env: dict[str, str]) -> None:
    """`restic backup --stdin` holds its (shared) lock while it waits for input."""
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    proc = subprocess.Popen(
        ["restic", "-r", str(repo), "backup", "--stdin", "--stdin-filename", "dump.sql"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not _written_locks(repo):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        time.sleep(0.2)  # restic 0.14 writes the lock file in place: let it finish
        refused = safehold(env, "-r", repo, "prune", expect=11)
        assert f"PID {proc.pid}" in refused.stderr
        assert proc.stdin is not None
        proc.stdin.write(b"SELECT 1;\n")
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    safehold(env, "-r", repo, "prune")
    dumped = safehold(env, "-r", repo, "dump", "latest", "/dump.sql")
    assert dumped.stdout == "SELECT 1;\n"


def test_locks_of_other_hosts(tmp_path: Path, env: dict[str, str]) -> None:
    """A fresh lock from another host blocks (its PID cannot be checked from here); one older
    than 30 minutes is stale. Written through safehold's Lock, as a remote process would."""
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    _random_files(src, 2, 1000, seed=2)
    safehold(env, "-r", repo, "init")
    other = _open(repo, env, Host("build-server-7", "ci", 1000, 1000, 424242))
    now = other.clock()
    fresh = Lock(now, True, "build-server-7", "ci", 424242, 1000, 1000)
    old = Lock(GoTime(now.ns - 31 * 60 * 10**9, now.offset), True, "old-host", "x", 1, 0, 0)
    old_id = other.save_unpacked(FileType.LOCK, old.encode())
    fresh_id = other.save_unpacked(FileType.LOCK, fresh.encode())

    proc = safehold(env, "-r", repo, "backup", src, expect=11)
    assert "exclusive lock by PID 424242 on build-server-7 (ci)" in proc.stderr
    proc = safehold(env, "-r", repo, "prune", expect=11)
    assert "build-server-7" in proc.stderr

    proc = safehold(env, "-r", repo, "unlock")
    assert "removed 1 lock(s)" in proc.stdout
    assert sorted(os.listdir(repo / "locks")) == [fresh_id]
    assert old_id not in os.listdir(repo / "locks")
    safehold(env, "-r", repo, "backup", src, expect=11)
    safehold(env, "-r", repo, "unlock", "--remove-all")
    safehold(env, "-r", repo, "backup", src)


# The real CLI, with the lock refreshed every 50 ms instead of every 5 minutes.
_FAST_REFRESH_CLI = """
from safehold.repo import lock
lock.DEFAULT_LOCK_TIMINGS = lock.LockTimings(0.05, 0.05, give_up_after_s=600)
from safehold.cli.main import run
run()
"""


def test_a_backup_whose_lock_is_removed_stops_with_exit_11(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`safehold unlock --remove-all` during a backup: the backup notices at its next refresh,
    stops before its snapshot, and leaves a repository that checks clean."""
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    small = tmp_path / "small"
    _random_files(small, 3, 10_000, seed=6)
    safehold(env, "-r", repo, "backup", small)
    (earlier,) = snapshot_ids(env, repo)
    big = tmp_path / "big"
    _random_files(big, 64, 5 * MIB, seed=13)  # long enough to remove its lock mid-way
    packs_before = len(_packs(repo))

    proc = subprocess.Popen(
        [sys.executable, "-c", _FAST_REFRESH_CLI, "-r", str(repo), "backup", str(big)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(_packs(repo)) <= packs_before:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.002)
    removed = safehold(env, "-r", repo, "unlock", "--remove-all")
    assert "removed 1 lock(s)" in removed.stdout
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.fail("the backup finished before its lock was removed: make the tree bigger")
    assert proc.returncode == 11, stderr
    assert "Traceback" not in stderr, stderr
    assert "error: repository lock lost: could not refresh the shared lock on" in stderr
    assert "was removed by another process" in stderr
    assert "hint: the operation stopped before its next write" in stderr

    assert snapshot_ids(env, repo) == [earlier]  # no snapshot after the loss
    assert os.listdir(repo / "locks") == []  # and no lock recreated
    check = safehold(env, "-r", repo, "check")
    assert "error" not in check.stderr
    target = tmp_path / "restore-earlier"
    safehold(env, "-r", repo, "restore", earlier, "--target", target)
    assert compare_trees(small, restored_root(target, small)) == []
    safehold(env, "-r", repo, "prune")  # the unreferenced packs go
    check = safehold(env, "-r", repo, "check")
    assert check.stderr == ""
    restic(env, "-r", repo, "check")


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([value[0] ^ 0x01]))


def test_flipped_byte_in_a_pack_is_found_and_contained(tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    safehold(env, "-r", repo, "init")
    damaged_src = tmp_path / "damaged"
    build_torture_tree(damaged_src, big_files=False)
    victim = damaged_src / "victim.bin"
    victim.write_bytes(random.Random(9).randbytes(100_000))
    os.link(victim, damaged_src / "victim-hardlink.bin")
    safehold(env, "-r", repo, "backup", damaged_src)
    clean_src = tmp_path / "clean"
    _random_files(clean_src, 3, 50_000, seed=3)
    safehold(env, "-r", repo, "backup", clean_src)
    damaged_snap, clean_snap = snapshot_ids(env, repo)

    opened = _open(repo, env)
    location = opened.index.lookup(hashlib.sha256(victim.read_bytes()).hexdigest())
    assert location is not None
    pack = repo / object_name(FileType.PACK, location.pack_id)
    _flip_byte(pack, location.blob.offset + location.blob.length // 2)

    # without --read-data only the structure is checked: same size, so nothing is noticed
    safehold(env, "-r", repo, "check")
    proc = safehold(env, "-r", repo, "check", "--read-data", expect=1)
    assert location.pack_id[:8] in proc.stderr
    assert damaged_snap[:8] in proc.stderr
    assert clean_snap[:8] not in proc.stderr
    checked = safehold(env, "-r", repo, "check", "--read-data", "--json", expect=1)
    report = json.loads(checked.stdout)
    assert report["ok"] is False
    assert report["affected_snapshots"] == [damaged_snap]
    restic(env, "-r", repo, "check", "--read-data", expect=1)  # the oracle agrees

    target = tmp_path / "restore-damaged"
    proc = safehold(env, "-r", repo, "restore", damaged_snap, "--target", target, expect=3)
    assert "victim.bin" in proc.stderr
    assert "victim-hardlink.bin" in proc.stderr
    restored = restored_root(target, damaged_src)
    assert (
        compare_trees(damaged_src, restored, ignore={b"victim.bin", b"victim-hardlink.bin"}) == []
    )
    # the failed files leave nothing under their names (no empty or partial file, no temp file)
    assert not os.path.lexists(os.path.join(restored, b"victim.bin"))
    assert not os.path.lexists(os.path.join(restored, b"victim-hardlink.bin"))
    assert not [name for name in os.listdir(restored) if name.startswith(b".safehold-restore-")]

    target = tmp_path / "restore-clean"
    safehold(env, "-r", repo, "restore", clean_snap, "--target", target)
    assert compare_trees(clean_src, restored_root(target, clean_src)) == []


def test_flipped_byte_in_an_index_file_is_named(tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    _random_files(src, 2, 1000, seed=4)
    safehold(env, "-r", repo, "init")
    safehold(env, "-r", repo, "backup", src)
    (index_id,) = os.listdir(repo / "index")
    _flip_byte(repo / "index" / index_id, 40)
    proc = safehold(env, "-r", repo, "check", expect=1)
    assert f"index/{index_id}" in proc.stderr
    # exit 3 as documented (issue 14: was 1), and the hint names the repair
    proc = safehold(env, "-r", repo, "restore", "latest", "--target", tmp_path / "t", expect=3)
    assert f"index/{index_id}" in proc.stderr
    assert "safehold repair index" in proc.stderr
