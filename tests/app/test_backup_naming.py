"""Snapshot names `<prefix>-<YYYY-MM-DD>-<reason>[-<note>]`, finding snapshots by name, id,
prefix or `latest`, and filtering by reason: through the app layer and through the CLI."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.app.backup import REASONS, BackupRequest, run_backup, snapshot_name, unique_name
from safehold.app.inspect import filter_snapshots
from safehold.backends.local import LocalBackend
from safehold.errors import SnapshotNotFoundError, UsageError
from safehold.repo.clock import Host
from safehold.repo.gotypes import GoTime, format_time, parse_time
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

HOUR = 3600 * 10**9


def _at(text: str) -> GoTime:
    return parse_time(text)


class _Clock:
    """Starts at a fixed instant and moves one hour per call: every snapshot gets its own time."""

    def __init__(self, start: GoTime) -> None:
        self.now = start

    def __call__(self) -> GoTime:
        current = self.now
        self.now = GoTime(current.ns + HOUR, current.offset)
        return current


@pytest.fixture
def clock() -> _Clock:
    return _Clock(_at("2026-01-14T09:00:00+01:00"))


@pytest.fixture
def repo(tmp_path: Path, clock: _Clock) -> Repository:
    host = Host("Web-1.example.org", "deploy", 1000, 1000, 4321)
    return Repository.init(LocalBackend(tmp_path / "repo"), b"naming",
                           kdf=KdfParams(n=1024, r=8, p=1), clock=clock, host=host)  # fmt: skip


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "db.sqlite").write_bytes(b"rows")
    return root


# ----- the name itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "when", "reason", "note", "expected"),
    [
        ("myapp-prod", "2026-01-14T10:00:00Z", "predeploy", "auth fix",
         "myapp-prod-2026-01-14-predeploy-auth-fix"),
        ("MyApp Prod", "2026-01-14T10:00:00Z", "daily", None, "myapp-prod-2026-01-14-daily"),
        ("web-1.example.org", "2026-03-01T00:00:00Z", "manual", "",
         "web-1-example-org-2026-03-01-manual"),
        # the date is the local date the snapshot was taken on, from its UTC offset
        ("app", "2026-01-14T23:30:00-05:00", "hourly", None, "app-2026-01-14-hourly"),
        ("app", "2026-01-15T00:30:00+01:00", "hourly", None, "app-2026-01-15-hourly"),
        # notes are slugged; a note that slugs to nothing adds nothing
        ("app", "2026-01-14T10:00:00Z", "evidence", "Ticket #4711: Login-Bug!!",
         "app-2026-01-14-evidence-ticket-4711-login-bug"),
        ("app", "2026-01-14T10:00:00Z", "manual", "!!!", "app-2026-01-14-manual"),
        ("--app--", "2026-01-14T10:00:00Z", "weekly", "  spaced  out ",
         "app-2026-01-14-weekly-spaced-out"),
    ],
)  # fmt: skip
def test_snapshot_name(prefix: str, when: str, reason: str, note: str | None,
                       expected: str) -> None:  # fmt: skip
    assert snapshot_name(prefix, _at(when), reason, note) == expected
    assert re.fullmatch(r"[a-z0-9-]+-\d{4}-\d\d-\d\d-[a-z]+(-[a-z0-9-]+)?", expected)


def test_run_backup_names_tags_and_records_the_reason(repo: Repository, src: Path) -> None:
    result = run_backup(repo, BackupRequest([str(src)], reason="predeploy", note="auth fix",
                                            name_prefix="myapp-prod", tags=["ci"]))  # fmt: skip
    snap = result.snapshot
    assert snap.name == "myapp-prod-2026-01-14-predeploy-auth-fix"
    assert snap.reason == "predeploy"
    assert snap.safehold["note"] == "auth fix"
    assert snap.tags == ["ci", "predeploy"]  # the reason is also a tag, for restic users
    assert snap.complete is True

    # without a prefix, the host name is the prefix; a tag equal to the reason is not doubled
    plain = run_backup(repo, BackupRequest([str(src)], reason="daily", tags=["daily"]))
    assert plain.snapshot.name == "web-1-example-org-2026-01-14-daily"
    assert plain.snapshot.tags == ["daily"]
    assert "note" not in plain.snapshot.safehold

    # the names are stored in the snapshot file, not computed on read
    stored = Repository.open(LocalBackend(repo.backend.location), b"naming").list_snapshots()
    assert [s.name for s in stored] == [snap.name, plain.snapshot.name]


def test_invalid_reason_is_refused(repo: Repository, src: Path) -> None:
    # Reasons are open (any lowercase word); one that is not a word is refused in one line.
    for bad in ("Because", "two words", "9lives", "x" * 33, ""):
        with pytest.raises(UsageError) as raised:
            run_backup(repo, BackupRequest([str(src)], reason=bad))
        assert repr(bad) in raised.value.message and "\n" not in raised.value.message
        assert all(reason in raised.value.hint for reason in REASONS)
    assert repo.list_snapshots() == []


def test_any_word_is_a_reason(repo: Repository, src: Path) -> None:
    taken = run_backup(repo, BackupRequest([str(src)], reason="because", name_prefix="shop"))
    assert taken.snapshot.reason == "because"
    assert taken.snapshot.name == "shop-2026-01-14-because"
    assert "incident" in REASONS


# ----- finding snapshots -------------------------------------------------------------------


def _take(repo: Repository, src: Path, reason: str, note: str | None = None) -> Snapshot:
    request = BackupRequest([str(src)], reason=reason, note=note, name_prefix="shop")
    return run_backup(repo, request).snapshot


def test_find_by_name_latest_and_id_prefix(repo: Repository, src: Path, clock: _Clock) -> None:
    daily_1 = _take(repo, src, "daily")
    predeploy = _take(repo, src, "predeploy", "v2.3")
    daily_2 = _take(repo, src, "daily")  # same day, same reason: the time is added
    daily_3 = _take(repo, src, "daily")
    clock.now = _at("2026-01-16T09:00:00+01:00")
    later = _take(repo, src, "daily")
    listing = repo.list_snapshots()
    assert [s.id for s in listing] == [daily_1.id, predeploy.id, daily_2.id, daily_3.id, later.id]
    # Two snapshots never share a name (this test used to check that the same name resolved
    # to the newest; names are now unique, so each resolves to its own snapshot).
    assert daily_1.name == "shop-2026-01-14-daily"
    hhmm = format_time(daily_2.time)[11:16].replace(":", "")
    assert daily_2.name == f"shop-2026-01-14-daily-{hhmm}"
    assert re.fullmatch(r"shop-2026-01-1[45]-daily(-\d{4})?", daily_3.name or "")
    assert len({s.name for s in (daily_1, daily_2, daily_3)}) == 3

    assert repo.find_snapshot("latest").id == later.id
    assert repo.find_snapshot("shop-2026-01-14-predeploy-v2-3").id == predeploy.id
    assert repo.find_snapshot("shop-2026-01-14-daily").id == daily_1.id
    assert repo.find_snapshot(f"shop-2026-01-14-daily-{hhmm}").id == daily_2.id
    assert repo.find_snapshot("shop-2026-01-16-daily").id == later.id
    assert repo.find_snapshot(daily_1.id).id == daily_1.id
    assert repo.find_snapshot(daily_1.id[:8]).id == daily_1.id
    assert repo.find_snapshot(daily_1.id[:8].upper()).id == daily_1.id

    ambiguous = [s for s in listing if s.id[0] == daily_1.id[0]]
    if len(ambiguous) > 1:
        with pytest.raises(UsageError):
            repo.find_snapshot(daily_1.id[0])
    with pytest.raises(SnapshotNotFoundError):
        repo.find_snapshot("shop-2026-01-13-daily")

    with pytest.raises(SnapshotNotFoundError):
        repo.find_snapshot("0" * 63 + "g")


def test_a_name_taken_in_the_same_minute_gets_a_counter() -> None:
    when = _at("2026-01-14T09:05:00+01:00")
    taken = {"a-2026-01-14-daily", "a-2026-01-14-daily-0905", None}
    assert unique_name("a-2026-01-14-daily", when, taken) == "a-2026-01-14-daily-0905-2"
    taken.add("a-2026-01-14-daily-0905-2")
    assert unique_name("a-2026-01-14-daily", when, taken) == "a-2026-01-14-daily-0905-3"
    assert unique_name("a-2026-01-14-weekly", when, taken) == "a-2026-01-14-weekly"


def test_latest_of_an_empty_repository(repo: Repository) -> None:
    with pytest.raises(SnapshotNotFoundError) as raised:
        repo.find_snapshot("latest")
    assert "no snapshots" in raised.value.message


def test_filter_by_reason_and_tags(repo: Repository, src: Path) -> None:
    daily = _take(repo, src, "daily")
    predeploy = _take(repo, src, "predeploy")
    tagged = run_backup(repo, BackupRequest([str(src)], reason="manual", tags=["daily"])).snapshot
    # a snapshot restic made carries no safehold metadata; its tag still counts as a reason
    restic_made = Snapshot(time=repo.clock(), tree=daily.tree, paths=[str(src)], tags=["daily"])
    repo.save_snapshot(restic_made)
    listing = repo.list_snapshots()
    assert restic_made.id in [s.id for s in listing]
    assert next(s for s in listing if s.id == restic_made.id).name is None

    def ids(found: list[Snapshot]) -> list[str]:
        return [s.id for s in found]

    assert ids(filter_snapshots(listing, "daily")) == [daily.id, tagged.id, restic_made.id]
    assert ids(filter_snapshots(listing, "predeploy")) == [predeploy.id]
    assert ids(filter_snapshots(listing, "weekly")) == []
    assert ids(filter_snapshots(listing, None, ["manual"])) == [tagged.id]
    assert ids(filter_snapshots(listing, "daily", ["manual"])) == [tagged.id]
    assert ids(filter_snapshots(listing)) == ids(listing)


# ----- the same through the CLI --------------------------------------------------------------


def test_cli_names_and_reason_filter(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, src: Path
) -> None:
    repo = str(tmp_path / "cli-repo")

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = run_cli("-r", repo, *args)
        assert proc.returncode == expect, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc

    run("init")
    run("backup", str(src), "--reason", "daily")
    proc = run("backup", str(src), "--reason", "predeploy", "--note", "Auth fix!")
    saved_as = re.search(r"saved as (\S+)", proc.stdout)
    assert saved_as
    run("backup", str(src), "--reason", "hourly", "--tag", "daily")
    snaps = json.loads(run("snapshots", "--json").stdout)
    day = snaps[1]["time"][:10]  # the local date the snapshot was taken on
    assert re.fullmatch(r"[a-z0-9-]+-" + day + "-predeploy-auth-fix", snaps[1]["name"])
    assert snaps[1]["name"] == saved_as.group(1)
    assert [s["reason"] for s in snaps] == ["daily", "predeploy", "hourly"]

    daily = json.loads(run("snapshots", "--reason", "daily", "--json").stdout)
    assert [s["id"] for s in daily] == [snaps[0]["id"], snaps[2]["id"]]
    text = run("snapshots", "--reason", "predeploy").stdout
    assert snaps[1]["short_id"] in text and snaps[0]["short_id"] not in text
    assert "1 snapshot(s)" in text
    assert "no snapshots" in run("snapshots", "--reason", "weekly").stdout

    listed = run("ls", snaps[1]["name"]).stdout.splitlines()
    assert str(src / "db.sqlite") in listed
    target = tmp_path / "restored"
    proc = run("restore", snaps[1]["name"], "--target", str(target))
    assert snaps[1]["short_id"] in proc.stdout
    assert (target / str(src).lstrip("/") / "db.sqlite").read_bytes() == b"rows"

    proc = run("restore", "no-such-name", "--target", str(tmp_path / "x"), expect=1)
    assert "no snapshot matches 'no-such-name'" in proc.stderr
    proc = run("backup", str(src), "--reason", "Because", expect=1)  # reasons are open words
    assert "Because" in proc.stderr
