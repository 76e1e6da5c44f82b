"""Damage stays local, as in restic: one damaged snapshot file (even the oldest) is skipped
with a warning that names it, and every command works on the intact ones; `forget ID` removes
it. Real CLI, real repository, restic as the oracle."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from safehold.backends import LocalBackend
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from tests.conftest import TEST_PASSWORD, RunCli
from tests.ops_helpers import plan_text


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def flip_byte(path: Path, position: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if position is None else position
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def restic(
    restic_bin: str, repo: Path, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {"RESTIC_PASSWORD": TEST_PASSWORD, "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache")}
    return subprocess.run(
        [restic_bin, "-r", str(repo), *args], env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def _snapshot_files(repo: Path) -> dict[str, Path]:
    return {p.name: p for p in (repo / "snapshots").iterdir()}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    (folder / "uploads").mkdir(parents=True)
    (folder / "uploads" / "a.txt").write_text("hello\n")
    (folder / "safehold.toml").write_text(plan_text())
    Repository.init(
        LocalBackend(folder / "repo"), TEST_PASSWORD.encode(), kdf=KdfParams(1024, 8, 1)
    )
    return folder


def _backups(run_cli: RunCli, app: Path, count: int) -> list[str]:
    plan = ["--plan", str(app / "safehold.toml")]
    for number in range(count):
        (app / "uploads" / f"n{number}.txt").write_text(f"file {number}\n" * 100)
        _ok(run_cli(*plan, "backup"))
    listing = json.loads(_ok(run_cli(*plan, "snapshots", "--json")))
    return [snapshot["id"] for snapshot in listing]


@pytest.mark.parametrize("damage", ["flip", "truncate", "not-json"])
def test_one_damaged_snapshot_blocks_no_command(
    app: Path, run_cli: RunCli, restic_bin: str, damage: str, tmp_path: Path
) -> None:
    plan = ["--plan", str(app / "safehold.toml")]
    repo = ["-r", str(app / "repo")]
    oldest, middle, newest = _backups(run_cli, app, 3)
    path = _snapshot_files(app / "repo")[oldest]
    if damage == "flip":
        flip_byte(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    else:  # a well-encrypted file whose content is not a snapshot: written with the key
        path.unlink()
        repository = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
        from safehold.repo.format import FileType

        oldest = repository.save_unpacked(FileType.SNAPSHOT, b'{"time": "never"}')
    short = oldest[:8]

    listed = run_cli(*plan, "snapshots", "--json")
    assert [s["id"] for s in json.loads(_ok(listed))] == [middle, newest]
    assert f"warning: skipping damaged snapshot {short}" in listed.stderr
    assert listed.stderr.count("skipping damaged") == 1, listed.stderr  # once, not per read
    assert f"safehold forget {short}" in listed.stderr
    human = run_cli(*plan, "snapshots")
    assert middle[:8] in _ok(human) and newest[:8] in human.stdout

    (app / "uploads" / "later.txt").write_text("later\n")
    backed_up = run_cli(*plan, "backup")
    _ok(backed_up)
    assert short in backed_up.stderr
    latest = json.loads(_ok(run_cli(*plan, "snapshots", "--json")))[-1]
    assert latest["parent"] == newest  # the parent is chosen among the intact snapshots

    for snapshot in (middle, "latest"):
        target = tmp_path / f"restored-{snapshot}"
        _ok(run_cli(*repo, "restore", snapshot, "--target", str(target)))
        [restored] = target.rglob("a.txt")
        assert restored.read_text() == "hello\n"
    files = json.loads(_ok(run_cli(*repo, "ls", middle, "--json")))
    assert any(str(entry.get("path", "")).endswith("a.txt") for entry in files)
    stats = json.loads(_ok(run_cli(*repo, "stats", "--json")))
    assert stats["snapshots"] == 3, stats
    drilled = run_cli(*plan, "drill", "--no-save")
    _ok(drilled)

    forget_policy = run_cli(*plan, "forget", "--keep-last", "2", "--force")
    _ok(forget_policy)
    _ok(run_cli(*plan, "prune"))
    assert oldest in _snapshot_files(app / "repo")  # a policy never decides about it

    dry = run_cli(*plan, "forget", short, "--dry-run")
    assert f"REMOVE {short} (damaged" in _ok(dry)
    assert oldest in _snapshot_files(app / "repo")
    removed = run_cli(*plan, "forget", short, "--force")
    assert "removed 1 snapshot(s)" in _ok(removed)
    assert oldest not in _snapshot_files(app / "repo")
    clean = run_cli(*plan, "snapshots")
    assert "damaged" not in _ok(clean) + clean.stderr
    _ok(run_cli(*plan, "prune"))
    check = restic(restic_bin, app / "repo", tmp_path, "check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr


def test_restic_agrees_on_the_intact_snapshots(
    app: Path, run_cli: RunCli, restic_bin: str, tmp_path: Path
) -> None:
    oldest, *intact = _backups(run_cli, app, 3)
    flip_byte(_snapshot_files(app / "repo")[oldest])
    theirs = restic(restic_bin, app / "repo", tmp_path, "snapshots", "--json", "--no-cache")
    ours = run_cli("-r", str(app / "repo"), "snapshots", "--json")
    restic_ids = sorted(s["id"] for s in json.loads(theirs.stdout))
    assert sorted(s["id"] for s in json.loads(_ok(ours))) == restic_ids == sorted(intact)


def test_python_api_sees_the_warning(app: Path, run_cli: RunCli) -> None:
    oldest, *intact = _backups(run_cli, app, 2)
    flip_byte(_snapshot_files(app / "repo")[oldest])
    repository = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    from safehold.errors import SafeholdWarning

    with pytest.warns(SafeholdWarning, match=f"damaged snapshot {oldest[:8]}"):
        listing = repository.list_snapshots()
    assert [s.id for s in listing] == intact
    assert set(repository.damaged_snapshots) == {oldest}


def _index_files(repo: Path) -> list[Path]:
    return sorted((repo / "index").iterdir())


@pytest.mark.parametrize("damage", ["flip", "truncate", "all-gone"])
def test_a_damaged_index_stops_with_a_hint_and_repair_index_fixes_it(
    app: Path, run_cli: RunCli, restic_bin: str, damage: str, tmp_path: Path
) -> None:
    repo = ["-r", str(app / "repo")]
    plan = ["--plan", str(app / "safehold.toml")]
    first, second = _backups(run_cli, app, 2)
    index_files = _index_files(app / "repo")
    assert len(index_files) == 2
    if damage == "flip":
        flip_byte(index_files[0])
    elif damage == "truncate":
        index_files[0].write_bytes(index_files[0].read_bytes()[:-20])
    else:  # every index file lost: everything comes from the pack headers
        for path in index_files:
            path.unlink()

    if damage != "all-gone":
        name = f"index/{index_files[0].name}"
        for command in (
            [*repo, "restore", first, "--target", str(tmp_path / "r0")],
            [*plan, "backup"],
            [*plan, "prune"],
        ):
            stopped = run_cli(*command)
            assert stopped.returncode == 3, (command, stopped.stderr)
            assert f"error: {name} is corrupt" in stopped.stderr, stopped.stderr
            assert "hint: run `safehold repair index`" in stopped.stderr
            assert "Traceback" not in stopped.stderr
        checked = run_cli(*repo, "check")
        assert checked.returncode == 1 and name in checked.stderr
        assert "safehold repair index" in checked.stderr

    before = sorted(p.name for p in _index_files(app / "repo"))
    dry = run_cli(*repo, "repair", "index", "--dry-run")
    assert "nothing changed" in _ok(dry)
    assert sorted(p.name for p in _index_files(app / "repo")) == before

    repaired = run_cli(*repo, "repair", "index", "--json")
    report = json.loads(_ok(repaired))
    assert report["unreadable_packs"] == [] and report["written"]
    assert sorted(report["removed"]) == before
    assert len(report["damaged_index_files"]) == (0 if damage == "all-gone" else 1)
    if damage == "all-gone":
        assert report["packs_read"] == report["packs"] > 0
    assert sorted(p.name for p in _index_files(app / "repo")) == sorted(report["written"])

    check = restic(restic_bin, app / "repo", tmp_path, "check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr
    for snapshot in (first, second):
        target = tmp_path / f"restored-{snapshot[:8]}"
        _ok(run_cli(*repo, "restore", snapshot, "--target", str(target)))
        [restored] = target.rglob("a.txt")
        assert restored.read_text() == "hello\n"
    (app / "uploads" / "after.txt").write_text("after repair\n")
    _ok(run_cli(*plan, "backup"))
    _ok(run_cli(*plan, "forget", first, "--force"))
    _ok(run_cli(*plan, "prune"))
    _ok(run_cli(*repo, "check", "--read-data"))
    check = restic(restic_bin, app / "repo", tmp_path, "check", "--read-data")
    assert check.returncode == 0, check.stdout + check.stderr


def test_repair_index_leaves_out_and_names_a_pack_with_a_damaged_header(
    app: Path, run_cli: RunCli
) -> None:
    repo = ["-r", str(app / "repo")]
    _backups(run_cli, app, 1)
    packs = sorted(p for p in (app / "repo" / "data").rglob("*") if p.is_file())
    victim = packs[0]
    flip_byte(victim, victim.stat().st_size - 10)  # inside the encrypted header
    report = json.loads(_ok(run_cli(*repo, "repair", "index", "--read-all-packs", "--json")))
    assert report["packs"] == len(packs) - 1
    [left_out] = report["unreadable_packs"]
    assert victim.name in left_out and "authentication failed" in left_out
    human = run_cli(*repo, "repair", "index")
    assert f"pack left out, its header cannot be read: data/{victim.name[:2]}/{victim.name}" in (
        _ok(human) + human.stderr
    )


def test_a_repository_path_that_is_a_file_exits_10(tmp_path: Path, run_cli: RunCli) -> None:
    not_a_folder = tmp_path / "backup.tar"
    not_a_folder.write_text("not a repository\n")
    for command in (["snapshots"], ["check"], ["restore", "latest", "--target", "x"]):
        done = run_cli("-r", str(not_a_folder), *command)
        assert done.returncode == 10, done.stderr
        assert f"error: {not_a_folder} is a file, not a repository" in done.stderr


@pytest.mark.parametrize("damage", ["data-field", "flip", "truncate"])
def test_a_corrupt_key_file_is_named_corrupt_never_a_wrong_password(
    app: Path, run_cli: RunCli, damage: str
) -> None:
    import json as json_module

    [key] = (app / "repo" / "keys").iterdir()
    if damage == "data-field":  # still a valid key file, but its sealed master key changed
        value = json_module.loads(key.read_text())
        data = value["data"]
        value["data"] = data[:12] + ("A" if data[12] != "A" else "B") + data[13:]
        key.write_text(json_module.dumps(value))
    elif damage == "flip":
        flip_byte(key)
    else:
        key.write_bytes(key.read_bytes()[:60])
    done = run_cli("-r", str(app / "repo"), "snapshots")
    assert done.returncode == 1, done.stderr  # not 12: no password was refused by a sound key
    assert f"keys/{key.name} is corrupt" in done.stderr
    assert "wrong password" not in done.stderr


def test_a_wrong_password_next_to_a_corrupt_key_names_both(
    app: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    repository = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    second = repository.add_key(b"another password", KdfParams(1024, 8, 1))
    flip_byte(app / "repo" / "keys" / second)
    done = run_cli("-r", str(app / "repo"), "snapshots", env={"SAFEHOLD_PASSWORD": "nope"})
    assert done.returncode == 12, done.stderr
    assert "wrong password" in done.stderr and f"keys/{second} is corrupt" in done.stderr
    _ok(run_cli("-r", str(app / "repo"), "snapshots"))  # the intact key still opens it


def test_a_unix_socket_is_recorded_and_skipped_on_restore(
    app: Path, run_cli: RunCli, restic_bin: str, tmp_path: Path
) -> None:
    import socket

    plan = ["--plan", str(app / "safehold.toml")]
    repo = ["-r", str(app / "repo")]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(app / "uploads" / "app.sock"))
    try:
        _ok(run_cli(*plan, "backup"))
    finally:
        listener.close()
    files = json.loads(_ok(run_cli(*repo, "ls", "latest", "--json")))
    [entry] = [e for e in files if str(e.get("path", "")).endswith("app.sock")]
    assert entry["type"] == "socket"
    theirs = restic(restic_bin, app / "repo", tmp_path, "ls", "latest", "--json")
    assert theirs.returncode == 0, theirs.stderr
    nodes = [json.loads(line) for line in theirs.stdout.splitlines() if line.strip()]
    assert [n["type"] for n in nodes if n.get("name") == "app.sock"] == ["socket"]

    target = tmp_path / "restored"
    restored = run_cli(*repo, "restore", "latest", "--target", str(target))
    assert "app.sock" not in _ok(restored) + restored.stderr
    [a_txt] = target.rglob("a.txt")
    assert a_txt.read_text() == "hello\n"
    assert not list(target.rglob("app.sock"))  # as restic: a socket is never restored
    ours_by_restic = tmp_path / "restic-restored"
    done = restic(restic_bin, app / "repo", tmp_path, "restore", "latest", "--target",
                  str(ours_by_restic))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not list(ours_by_restic.rglob("app.sock"))
    _ok(run_cli(*plan, "restore", "latest", "--source", "uploads", "--into",
                str(tmp_path / "into")))  # fmt: skip
    drilled = run_cli(*plan, "drill", "--no-save")
    _ok(drilled)
    _ok(run_cli(*repo, "check", "--read-data"))


def _safehold_objects(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "safehold").rglob("*") if p.is_file())


def test_check_verifies_every_safehold_object(app: Path, run_cli: RunCli) -> None:
    """20 of 20 flips and truncations under safehold/ are found, each naming its object."""
    from safehold.repo.check import Checker

    plan = ["--plan", str(app / "safehold.toml")]
    _backups(run_cli, app, 1)
    _ok(run_cli(*plan, "drill"))
    _ok(run_cli(*plan, "hold", "latest", "--why", "incident 42"))
    repository = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    repository.save_record("ledger", {"entries": [1, 2, 3]})
    objects = _safehold_objects(app / "repo")
    assert {p.parent.name for p in objects} == {"drills", "holds", "ledger"}
    clean = Checker(repository).run()
    assert clean.ok and clean.records_checked == 3, clean.errors
    cases = 0
    for number in range(20):
        victim = objects[number % len(objects)]
        original = victim.read_bytes()
        if number % 2:
            victim.write_bytes(original[: (len(original) * number) // 21])
        else:
            flip_byte(victim, (len(original) * number) // 21)
        report = Checker(repository).run()
        victim.write_bytes(original)
        relative = victim.relative_to(app / "repo").as_posix()
        assert any(relative in error for error in report.errors), (number, report.errors)
        cases += 1
    assert cases == 20
    flip_byte(objects[0])
    checked = run_cli("-r", str(app / "repo"), "check")
    assert checked.returncode == 1
    assert f"error: {objects[0].relative_to(app / 'repo').as_posix()} is corrupt" in (
        checked.stderr
    )


def test_check_reports_stale_locks_and_how_to_remove_them(app: Path, run_cli: RunCli) -> None:
    from safehold.repo.format import FileType
    from safehold.repo.gotypes import GoTime
    from safehold.repo.lock import Lock

    repository = Repository.open(LocalBackend(app / "repo"), TEST_PASSWORD.encode())
    hour_ago = GoTime(repository.clock().ns - 3600 * 10**9, 0)
    dead = Lock(hour_ago, True, "other-host", "alice", 4242)
    lock_id = repository.save_unpacked(FileType.LOCK, dead.encode())
    as_json = run_cli("-r", str(app / "repo"), "check", "--json")
    assert json.loads(_ok(as_json))["stale_locks"] == [lock_id]
    checked = run_cli("-r", str(app / "repo"), "check")
    assert checked.returncode == 0, checked.stderr  # a warning, not damage
    assert f"lock locks/{lock_id} is stale: exclusive lock by PID 4242 on other-host" in (
        checked.stderr
    )
    assert "`restic unlock`" in checked.stderr and "`safehold unlock`" in checked.stderr
    _ok(run_cli("-r", str(app / "repo"), "unlock"))
    again = run_cli("-r", str(app / "repo"), "check", "--json")
    assert json.loads(_ok(again))["stale_locks"] == []
    assert "lock" not in again.stderr
