"""Work kept across interruptions, with the real CLI in a subprocess and restic as the oracle.

Ctrl-C (SIGINT) or SIGTERM half-way through a backup stores and indexes the packs in flight
before the process exits 130, so the next backup uploads only the other half; a kill -9 keeps
what the index timer wrote. After each, `restic check` finds nothing wrong.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from runners import make_env, restic, safehold, snapshot_ids

from safehold.backends.local import LocalBackend
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from tests.receivers import HttpReceiver

MIB = 1024 * 1024
TOTAL = 64 * MIB  # 16 files of 4 MiB: 8 data packs of the default 8 MiB


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return make_env(tmp_path / "restic-cache")


def _dataset(directory: Path, seed: int) -> None:
    """Incompressible, all different: every byte of it is a new blob."""
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    for number in range(TOTAL // (4 * MIB)):
        (directory / f"part-{number:02d}.bin").write_bytes(rng.randbytes(4 * MIB))


def _packs(repo: Path) -> list[str]:
    return [
        name
        for sub in sorted(os.listdir(repo / "data"))
        for name in os.listdir(repo / "data" / sub)
        if not name.startswith(".tmp-")
    ]


def _index_files(repo: Path) -> list[str]:
    return [name for name in os.listdir(repo / "index") if not name.startswith(".tmp-")]


def _spawn(env: dict[str, str], *args: str | os.PathLike[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold", *[os.fspath(arg) for arg in args]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _signal_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], signum: int
) -> tuple[str, str]:
    deadline = time.monotonic() + 120
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the backup ended before the signal could be sent: {proc.stderr}")
        assert time.monotonic() < deadline, "the moment to send the signal never came"
        time.sleep(0.002)
    proc.send_signal(signum)
    return proc.communicate(timeout=120)


def _indexed_data(repo: Path, env: dict[str, str]) -> tuple[int, set[str]]:
    """Plaintext bytes of the data blobs in the index, and the packs it names."""
    opened = Repository.open(LocalBackend(repo), env["SAFEHOLD_PASSWORD"].encode())
    index = opened.index
    size = 0
    for blob_id in index.blob_ids():
        location = index.lookup(blob_id)
        assert location is not None
        if location.blob.type is BlobType.DATA:
            size += location.blob.plaintext_length
    return size, set(index.packs)


def _backup_json(env: dict[str, str], repo: Path, src: Path | None) -> dict[str, object]:
    """The summary of `backup --json` (its last line when status lines stream before it);
    without `src`, `repo` is a plan file."""
    if src is None:
        proc = safehold(env, "--plan", repo, "backup", "--json", cwd=repo.parent)
    else:
        proc = safehold(env, "-r", repo, "backup", src, "--json")
    try:
        summary: dict[str, object] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_backup_keeps_its_work_for_the_next_one(
    tmp_path: Path, env: dict[str, str], signum: int
) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    safehold(env, "-r", repo, "init")
    _dataset(src, seed=21)

    proc = _spawn(env, "-r", repo, "backup", src)
    # half-way: 4 of the 8 data packs are stored, and nothing is indexed yet (the pack count
    # and time triggers are far away), so all that is kept is what the interrupt saves
    _, stderr = _signal_when(proc, lambda: len(_packs(repo)) >= 4, signum)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    found = re.search(r"error: interrupted; ([\d.]+) MiB kept for the next backup", stderr)
    assert found, stderr
    assert "uploads only what is missing" in stderr
    kept_mib = float(found.group(1))
    assert kept_mib >= 4 * 8 * 0.9  # at least the packs it had when the signal came

    assert os.listdir(repo / "locks") == []
    assert snapshot_ids(env, repo) == []
    indexed, indexed_packs = _indexed_data(repo, env)
    assert abs(indexed / MIB - kept_mib) < 0.1  # the message tells the truth
    assert indexed_packs == set(_packs(repo))  # every pack in flight was finished and indexed
    restic(env, "-r", repo, "check")  # the oracle: a valid repository at this moment
    check = safehold(env, "-r", repo, "check")
    assert check.stderr == "", check.stderr

    summary = _backup_json(env, repo, src)
    added = int(summary["bytes_added"])  # type: ignore[call-overload]
    assert added <= TOTAL * 0.55, f"the next backup added {added / MIB:.1f} MiB of 64"
    assert abs(added + indexed - TOTAL) < MIB  # it added exactly what was missing (+ trees)
    restic(env, "-r", repo, "check", "--read-data")
    target = tmp_path / "restored"
    safehold(env, "-r", repo, "restore", "latest", "--target", target)
    restored = target / src.relative_to("/")
    for part in sorted(src.iterdir()):
        assert (restored / part.name).read_bytes() == part.read_bytes()


def test_kill_9_after_a_timed_index_write_keeps_the_indexed_work(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    safehold(env, "-r", repo, "init")
    _dataset(src, seed=22)

    # only the timer writes an index mid-way: 8 packs never reach the 32-pack trigger
    proc = _spawn({**env, "SAFEHOLD_INDEX_INTERVAL": "0.2"}, "-r", repo, "backup", src)
    _signal_when(proc, lambda: bool(_index_files(repo)), signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot_ids(env, repo) == []
    indexed, _ = _indexed_data(repo, env)
    assert 0 < indexed < TOTAL * 0.9, f"{indexed / MIB:.1f} MiB indexed when killed"
    restic(env, "-r", repo, "unlock")  # the dead process's lock
    restic(env, "-r", repo, "check")

    summary = _backup_json(env, repo, src)
    added = int(summary["bytes_added"])  # type: ignore[call-overload]
    assert abs(added + indexed - TOTAL) < MIB  # the timed index saved re-uploading that much
    restic(env, "-r", repo, "check")


def test_index_interval_is_validated(tmp_path: Path, env: dict[str, str]) -> None:
    proc = safehold(
        env, "-r", tmp_path / "repo", "backup", tmp_path, "--index-interval", "0", expect=None
    )
    assert proc.returncode != 0
    assert "--index-interval" in proc.stderr


def test_an_interrupted_plan_backup_keeps_its_work_and_sends_no_alert(
    tmp_path: Path, env: dict[str, str], http_receiver: HttpReceiver
) -> None:
    """The scheduled-job shape: a plan with an alert channel, SIGTERM (what systemd sends)
    half-way. Stopped on purpose is not a failure: no alert goes out."""
    app = tmp_path / "app"
    app.mkdir()
    _dataset(app / "data", seed=23)
    (app / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "data"\ntype = "files"\npaths = ["data"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
        f'[[alerts.channels]]\nname = "hook"\nurl = "{http_receiver.url()}"\n'
        'severity = "warning"\n'
    )
    plan = ("--plan", app / "safehold.toml")
    safehold(env, *plan, "init", cwd=app)
    (repo,) = {path.parent for path in (app / "backups").rglob("config")}

    proc = _spawn(env, *plan, "backup")
    _, stderr = _signal_when(proc, lambda: len(_packs(repo)) >= 4, signal.SIGTERM)
    assert proc.returncode == 130, stderr
    assert re.search(r"error: interrupted; [\d.]+ MiB kept for the next backup", stderr), stderr
    assert http_receiver.drain() == []  # a failed one does: tests/cli/test_command_alerts.py
    indexed, packs = _indexed_data(repo, env)
    assert indexed > 0 and packs == set(_packs(repo))
    restic(env, "-r", repo, "check")

    summary = _backup_json(env, app / "safehold.toml", None)
    added = int(summary["bytes_added"])  # type: ignore[call-overload]
    assert added <= TOTAL * 0.55 and abs(added + indexed - TOTAL) < MIB


def test_an_interrupted_incident_start_stays_open_and_keeps_its_evidence_data(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Ctrl-C during the evidence snapshot of `incident start`: exit 130, the incident is
    open with the interruption in its timeline, the data stored so far is indexed, and the
    evidence backup taken by hand afterwards uploads only the rest."""
    app = tmp_path / "app"
    app.mkdir()
    _dataset(app / "data", seed=29)
    (app / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "data"\ntype = "files"\npaths = ["data"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
        '[incident]\nfreeze = "touch frozen"\nunfreeze = "rm frozen"\n'
    )
    plan = ("--plan", app / "safehold.toml")
    safehold(env, *plan, "init", cwd=app)
    (repo,) = {path.parent for path in (app / "backups").rglob("config")}

    proc = _spawn(env, *plan, "incident", "start", "--why", "ransomware")
    _, stderr = _signal_when(proc, lambda: len(_packs(repo)) >= 4, signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert re.search(r"error: incident start interrupted; [\d.]+ MiB kept", stderr), stderr
    assert "the incident is OPEN" in stderr and "safehold incident end" in stderr
    assert (app / "frozen").exists()  # the freeze ran and stays in force
    indexed, packs = _indexed_data(repo, env)
    assert indexed > 0 and packs == set(_packs(repo))
    restic(env, "-r", repo, "check")

    status = json.loads(safehold(env, *plan, "incident", "status", "--json", cwd=app).stdout)
    assert status["open"] is True and status["evidence"]["snapshot"] is None
    assert any("evidence INTERRUPTED" in event["what"] for event in status["timeline"])

    proc_evidence = safehold(env, *plan, "backup", "--reason", "evidence", "--json", cwd=app)
    summary = json.loads(proc_evidence.stdout.splitlines()[-1])
    added = int(summary["bytes_added"])
    assert abs(added + indexed - TOTAL) < MIB
    safehold(env, *plan, "incident", "end", cwd=app)
    assert not (app / "frozen").exists()
