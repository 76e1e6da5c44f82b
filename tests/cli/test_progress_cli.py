"""Progress of long commands: plain lines in logs, `--json` status streams, `-q` silence, and
the rate/ETA arithmetic behind all of them. The commands run as real subprocesses (stderr is
not a terminal there, which is the scheduled-job case)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from safehold.app.plan_backup import run_plan_backup
from safehold.app.restore import execute_restore, plan_restore
from safehold.backends.local import LocalBackend
from safehold.cli.progress import Tracker, status_line, status_message
from safehold.repo.key import KdfParams
from safehold.repo.progress import Progress
from safehold.repo.repository import Repository
from safehold.sources.files import FilesSource
from safehold.sources.sqlite import SqliteSource
from tests.conftest import TEST_PASSWORD, RunCli

MIB = 1024 * 1024
LINE = re.compile(r"^\[\d+:\d\d\] (?P<title>[^:]+): (?P<rest>.+)$")  # title: phase [source]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 MiB in 12 files, incompressible: long enough to outlast a small progress interval."""
    root = tmp_path_factory.mktemp("progress") / "data"
    root.mkdir()
    rng = random.Random(61)
    for number in range(12):
        (root / f"file-{number:02d}.bin").write_bytes(rng.randbytes(2 * MIB))
    return root


@pytest.fixture
def repo_path(tmp_path: Path, run_cli: RunCli) -> Path:
    path = tmp_path / "repo"
    assert run_cli("-r", str(path), "init").returncode == 0
    return path


def _progress_lines(stderr: str) -> list[re.Match[str]]:
    return [match for line in stderr.splitlines() if (match := LINE.match(line))]


# ----- the arithmetic ----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_count_from_the_start_of_each_phase() -> None:
    clock = _Clock()
    tracker = Tracker(clock)
    tracker.update(Progress("backup", 0, 100 * MIB, "bytes", 0, "/a", 10, "db"))
    clock.now += 4
    tracker.update(Progress("backup", 40 * MIB, 100 * MIB, "bytes", 4, "/srv/db.dump", 10, "db"))
    status = tracker.current()
    assert status is not None
    assert status.rate == pytest.approx(10 * MIB)
    assert status.eta == pytest.approx(6)
    assert status_line(status) == (
        "[0:04] backup db: 40.0 MiB of 100.0 MiB (40%), 4 of 10 files, 10.0 MiB/s, ETA 0:06, "
        "/srv/db.dump"
    )
    message = status_message(status, "backup")
    assert message == {
        "message_type": "status", "phase": "backup", "source": "db", "seconds_elapsed": 4.0,
        "seconds_remaining": 6, "percent_done": 0.4, "total_files": 10, "files_done": 4,
        "total_bytes": 100 * MIB, "bytes_done": 40 * MIB, "current_files": ["/srv/db.dump"],
    }  # fmt: skip

    # a new phase starts its own rate; items without a total have no ETA
    tracker.update(Progress("read data", 0, None))
    clock.now += 2
    tracker.update(Progress("read data", 8, None))
    status = tracker.current()
    assert status is not None and status.rate == pytest.approx(4) and status.eta is None
    assert status_line(status) == "[0:06] read data: 8, 4.0/s"
    assert status_message(status, "steps")["items_done"] == 8


def test_restore_status_uses_restics_field_names() -> None:
    clock = _Clock()
    tracker = Tracker(clock)
    tracker.update(Progress("restore", 5 * MIB, 20 * MIB, "bytes", 3, "/t/x", None))
    clock.now += 1
    status = tracker.current()
    assert status is not None
    message = status_message(status, "restore")
    assert message["bytes_restored"] == 5 * MIB and message["files_restored"] == 3
    assert message["total_bytes"] == 20 * MIB and "bytes_done" not in message
    assert "seconds_remaining" not in message  # below 2 s in a phase: no rate, no guess


# ----- in logs: a line every --progress-interval seconds -----------------------------------


def test_backup_and_restore_print_progress_lines_off_a_terminal(
    run_cli: RunCli, repo_path: Path, dataset: Path, tmp_path: Path
) -> None:
    backup = run_cli("-r", str(repo_path), "--progress-interval", "0.02", "backup", str(dataset))
    assert backup.returncode == 0, backup.stderr
    lines = _progress_lines(backup.stderr)
    assert lines, backup.stderr
    assert {line["title"] for line in lines} <= {"backup", "finishing"}
    assert any(re.search(r"of 24\.0 MiB \(\d+%\), \d+ of 12 files", m["rest"]) for m in lines)
    assert "snapshot" in backup.stdout  # the summary is still there, on stdout

    restore = run_cli(
        "-r", str(repo_path), "restore", "latest", "--target", str(tmp_path / "out"),
        "--progress-interval", "0.02",  # after the command name, as restic takes it
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    lines = _progress_lines(restore.stderr)
    assert lines and {line["title"] for line in lines} == {"restore"}
    assert any("of 24.0 MiB" in line["rest"] for line in lines)


def test_check_read_data_prune_and_copy_print_progress_lines(
    run_cli: RunCli, repo_path: Path, dataset: Path, tmp_path: Path
) -> None:
    assert run_cli("-r", str(repo_path), "backup", str(dataset)).returncode == 0
    fast = {"SAFEHOLD_PROGRESS_INTERVAL": "0.001", "SAFEHOLD_FROM_PASSWORD": TEST_PASSWORD}
    check = run_cli("-r", str(repo_path), "check", "--read-data", env=fast)
    assert check.returncode == 0, check.stderr
    assert "read data" in {line["title"] for line in _progress_lines(check.stderr)}

    other = tmp_path / "other"
    assert run_cli("-r", str(other), "init").returncode == 0
    copy = run_cli("-r", str(other), "copy", "--from-repo", str(repo_path), env=fast)
    assert copy.returncode == 0, copy.stderr
    assert _progress_lines(copy.stderr), copy.stderr

    # prune's steps are quick here (3 packs): its lines, if any, are well-formed
    prune = run_cli("-r", str(repo_path), "forget", "latest", "--force", "--prune", env=fast)
    assert prune.returncode == 0, prune.stderr
    assert "prune done" in prune.stdout
    for line in prune.stderr.splitlines():
        assert LINE.match(line) and line.split("] ")[1].startswith(("repack", "delete")), line


def test_a_short_command_prints_no_progress_with_the_default_interval(
    run_cli: RunCli, repo_path: Path, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("a")
    backup = run_cli("-r", str(repo_path), "backup", str(small))
    assert backup.returncode == 0 and backup.stderr == ""


# ----- --json: status lines, then the summary ----------------------------------------------


def test_json_streams_status_lines_and_ends_with_a_summary(
    run_cli: RunCli, repo_path: Path, dataset: Path, tmp_path: Path
) -> None:
    backup = run_cli(
        "-r", str(repo_path), "backup", str(dataset), "--json", "--progress-interval", "0.02"
    )
    assert backup.returncode == 0, backup.stderr
    messages = [json.loads(line) for line in backup.stdout.splitlines()]  # every line parses
    *statuses, summary = messages
    assert statuses and {m["message_type"] for m in statuses} == {"status"}
    assert summary["message_type"] == "summary"
    assert summary["files_new"] == 12 and summary["bytes_added"] >= 24 * MIB
    assert summary["total_files_processed"] == 12 and len(summary["snapshot_id"]) == 64
    done = [m["bytes_done"] for m in statuses if m["phase"] == "backup"]
    assert done == sorted(done) and all(m["total_bytes"] in (None, 24 * MIB) for m in statuses)
    assert backup.stderr == ""  # the stream goes to stdout, nothing to stderr

    restore = run_cli(
        "-r", str(repo_path), "restore", "latest", "--target", str(tmp_path / "out"),
        "--json", "--progress-interval", "0.02",
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    *statuses, summary = [json.loads(line) for line in restore.stdout.splitlines()]
    assert statuses and all(m["message_type"] == "status" for m in statuses)
    assert all("bytes_restored" in m and m["total_bytes"] == 24 * MIB for m in statuses)
    assert summary["message_type"] == "summary"
    assert summary["files_restored"] == 12 and summary["bytes_restored"] == 24 * MIB

    # a short run (the default 10 s interval) prints only its summary: one parseable object
    again = run_cli("-r", str(repo_path), "backup", str(dataset), "--json")
    assert json.loads(again.stdout)["files_unmodified"] == 12


# ----- -q ----------------------------------------------------------------------------------


def test_quiet_prints_nothing_but_errors(
    run_cli: RunCli, repo_path: Path, dataset: Path, tmp_path: Path
) -> None:
    fast = {"SAFEHOLD_PROGRESS_INTERVAL": "0.001"}
    for args in (
        ("backup", str(dataset)),
        ("restore", "latest", "--target", str(tmp_path / "out")),
        ("check", "--read-data"),
    ):
        proc = run_cli("-q", "-r", str(repo_path), *args, env=fast)
        assert proc.returncode == 0, proc.stderr
        assert (proc.stdout, proc.stderr) == ("", ""), args
    json_quiet = run_cli("-r", str(repo_path), "backup", str(dataset), "--json", "-q", env=fast)
    assert [json.loads(line)["message_type"] for line in json_quiet.stdout.splitlines()] == [
        "summary"
    ]
    failed = run_cli("-q", "-r", str(repo_path), "backup", str(tmp_path / "missing"))
    assert failed.returncode != 0 and failed.stdout == ""
    assert failed.stderr.startswith("error: ") and "does not exist" in failed.stderr


# ----- plan source restores report the data they read --------------------------------------


def test_plan_backups_and_source_restores_report_their_source(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(1024, 8, 1))
    uploads = tmp_path / "app" / "uploads"
    uploads.mkdir(parents=True)
    rng = random.Random(62)
    for number in range(3):
        (uploads / f"u{number}.bin").write_bytes(rng.randbytes(700_000))
    database = tmp_path / "app" / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (v TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [(os.urandom(50).hex(),)] * 2000)
    files, db = FilesSource("uploads", [uploads]), SqliteSource("db", database)
    backup_reports: list[Progress] = []
    result = run_plan_backup(
        repo, [files, db], app="shop", env="prod", reason="daily", progress=backup_reports.append
    )
    assert result.failed == []
    # the backup names the source it works on; a stream (the SQLite dump) has no size up
    # front, so there is a file count but no byte total
    backup = [r for r in backup_reports if r.phase == "backup"]
    assert {r.source for r in backup} == {"uploads", "db"}
    assert backup[-1].files == backup[-1].files_total == 4
    assert all(r.total is None for r in backup)
    assert backup[-1].done == result.stats.bytes_read

    for source, target in ((files, tmp_path / "files"), (db, tmp_path / "restored.db")):
        reports: list[Progress] = []
        plan = plan_restore(repo, result.snapshot, source, str(target), app="shop", env="prod")
        execute_restore(repo, plan, progress=reports.append)
        assert reports and {r.phase for r in reports} == {"restore"}
        assert {r.source for r in reports} == {source.name}
        assert reports[0].done == 0 and reports[-1].done == plan.total_bytes > 0
        assert reports[-1].total == plan.total_bytes
        assert [r.done for r in reports] == sorted(r.done for r in reports)


# ----- drill -------------------------------------------------------------------------------


def test_a_drill_prints_its_phases_as_progress_lines(tmp_path: Path, run_cli: RunCli) -> None:
    from tests.drills.test_drill_cli import ALL_CHECKS, make_app

    app = make_app(tmp_path, checks=ALL_CHECKS)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"SAFEHOLD_DRILL_TMPDIR": str(scratch), "SAFEHOLD_PROGRESS_INTERVAL": "0.005"}
    plan = ("--plan", str(app / "safehold.toml"))
    assert run_cli(*plan, "init", env=env).returncode == 0
    assert run_cli(*plan, "backup", env=env).returncode == 0
    drill = run_cli(*plan, "drill", env=env)
    assert drill.returncode == 0, drill.stderr
    titles = {line["title"] for line in _progress_lines(drill.stderr)}
    assert "checks" in titles, drill.stderr  # the checks start servers: they outlast 5 ms
    allowed = ("fetch", "scratch", "restore db", "restore uploads", "checks", "teardown")
    assert titles <= set(allowed), titles


# ----- restore --only-missing, incident start, release start, repair index -----------------


def test_an_only_missing_restore_counts_only_the_files_it_puts_back(
    tmp_path: Path, run_cli: RunCli
) -> None:
    app = tmp_path / "app"
    uploads = app / "uploads"
    uploads.mkdir(parents=True)
    rng = random.Random(63)
    for number in range(6):
        (uploads / f"u{number}.bin").write_bytes(rng.randbytes(MIB))
    (uploads / "sub").mkdir()
    (uploads / "sub" / "s.bin").write_bytes(rng.randbytes(MIB // 2))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", kdf=KdfParams(1024, 8, 1))
    source = FilesSource("uploads", [uploads])
    snapshot = run_plan_backup(repo, [source], app="shop", env="prod", reason="daily").snapshot
    (uploads / "u1.bin").unlink()
    shutil.rmtree(uploads / "sub")  # a missing folder counts the bytes under it
    plan = plan_restore(
        repo, snapshot, source, str(uploads), app="shop", env="prod", only_missing=True
    )
    assert plan.restore_bytes == MIB + MIB // 2 < plan.total_bytes
    reports: list[Progress] = []
    execute_restore(repo, plan, progress=reports.append)
    assert reports[-1].done == reports[-1].total == plan.restore_bytes
    assert (uploads / "sub" / "s.bin").stat().st_size == MIB // 2

    # the CLI: its --json stream says the same total, the summary comes last
    (app / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "uploads"\ntype = "files"\npaths = ["uploads"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
    )
    cli = ("--plan", str(app / "safehold.toml"))
    assert run_cli(*cli, "init").returncode == 0
    assert run_cli(*cli, "backup").returncode == 0
    for name in ("u2.bin", "u3.bin"):
        (uploads / name).unlink()
    restore = run_cli(
        *cli, "restore", "latest", "--source", "uploads", "--into", str(uploads),
        "--only-missing", "--json", env={"SAFEHOLD_PROGRESS_INTERVAL": "0.0005"},
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    *statuses, summary = [json.loads(line) for line in restore.stdout.splitlines()]
    assert statuses and {m["total_bytes"] for m in statuses} == {2 * MIB}, statuses
    assert summary["message_type"] == "summary" and summary["evidence"] == []
    assert any("restore 2 missing file(s)" in line for line in summary["summary"])


def _incident_app(tmp_path: Path) -> tuple[Path, Path]:
    app = tmp_path / "app"
    uploads = app / "uploads"
    uploads.mkdir(parents=True)
    rng = random.Random(64)
    for number in range(8):
        (uploads / f"u{number}.bin").write_bytes(rng.randbytes(2 * MIB))
    with sqlite3.connect(app / "app.db") as connection:
        connection.execute("CREATE TABLE t (v TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [(os.urandom(20).hex(),)] * 500)
    (app / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "db"\ntype = "sqlite"\npath = "app.db"\n'
        '[[sources]]\nname = "uploads"\ntype = "files"\npaths = ["uploads"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
        '[release]\nrollback_command = "true"\n'
        '[incident]\nfreeze = "touch frozen"\nunfreeze = "rm frozen"\n'
    )
    return app, app / "safehold.toml"


def test_incident_and_release_start_show_their_snapshot_on_stderr_and_honour_quiet(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """The evidence snapshot of `incident start` and the pre-deploy snapshot of `release
    start` are backups: progress lines on stderr (stdout stays the command's own output, or
    its one JSON document), nothing at all with -q."""
    app, plan_file = _incident_app(tmp_path)
    cli = ("--plan", str(plan_file))
    fast = {"SAFEHOLD_PROGRESS_INTERVAL": "0.001"}
    assert run_cli(*cli, "init").returncode == 0

    start = run_cli(*cli, "incident", "start", "--why", "disk", "--json", env=fast)
    assert start.returncode == 0, start.stderr
    document = json.loads(start.stdout)  # one document, no status lines in it
    assert document["evidence"]["complete"] is True
    titles = {line["title"] for line in _progress_lines(start.stderr)}
    assert "backup uploads" in titles, start.stderr
    assert titles <= {"backup db", "backup uploads", "finishing", "scope"}, titles
    assert run_cli(*cli, "incident", "end").returncode == 0

    quiet = run_cli("-q", *cli, "incident", "start", "--why", "again", env=fast)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert run_cli(*cli, "incident", "end").returncode == 0

    for number in range(8):  # new data: the pre-deploy snapshot stores it all again
        (app / "uploads" / f"u{number}.bin").write_bytes(os.urandom(2 * MIB))
    release = run_cli(*cli, "release", "start", "--id", "v1", env=fast)
    assert release.returncode == 0, release.stderr
    assert "release v1 started" in release.stdout
    titles = {line["title"] for line in _progress_lines(release.stderr)}
    assert "backup uploads" in titles and titles <= {"backup db", "backup uploads", "finishing"}
    assert not _progress_lines(release.stdout)

    as_json = run_cli(*cli, "release", "start", "--id", "v2", "--json", "-q", env=fast)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["id"] == "v2" and as_json.stderr == ""


def test_repair_index_reports_its_phases(tmp_path: Path, run_cli: RunCli, dataset: Path) -> None:
    from safehold.repo.repair import repair_index

    path = tmp_path / "repo"
    assert run_cli("-r", str(path), "init").returncode == 0
    assert run_cli("-r", str(path), "backup", str(dataset)).returncode == 0
    repo = Repository.open(LocalBackend(path), TEST_PASSWORD.encode())
    reports: list[Progress] = []
    with repo.locked(exclusive=True):
        repair_index(repo, read_all_packs=True, progress=reports.append)
    phases = [r.phase for r in reports]
    assert phases == sorted(phases, key=["index files", "packs", "write index"].index)
    packs = [r for r in reports if r.phase == "packs"]
    stored = sum(len(os.listdir(path / "data" / sub)) for sub in os.listdir(path / "data"))
    assert packs[-1].done == packs[-1].total == stored > 0
    assert {"index files", "write index"} <= set(phases)

    fast = {"SAFEHOLD_PROGRESS_INTERVAL": "0.0005"}
    proc = run_cli("-r", str(path), "repair", "index", "--read-all-packs", env=fast)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stderr.splitlines():  # quick here: its lines, if any, are well-formed
        match = LINE.match(line)
        assert match and match["title"] in ("index files", "packs", "write index"), line
    quiet = run_cli("-q", "-r", str(path), "repair", "index", "--read-all-packs", env=fast)
    assert quiet.returncode == 0 and (quiet.stdout, quiet.stderr) == ("", "")
