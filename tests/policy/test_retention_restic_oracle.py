"""restic 0.14 as the oracle: `restic forget --dry-run --json` against `apply_retention`.

Snapshots are made by real `restic backup --time` runs under various TZ settings (so their
offsets are restic's own, DST included); the snapshot list restic reports is fed to
`apply_retention`, and for every snapshot the keep/remove decision and the rules that matched
must agree. The only difference allowed is safehold's "newest snapshot" safeguard.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from safehold.policy.retention import Decision, RetentionPolicy, apply_retention
from safehold.repo.gotypes import parse_time
from safehold.repo.snapshot import Snapshot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed"),
]

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
]


class ResticRepo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.data.mkdir(parents=True)
        (self.data / "file").write_text("retention oracle\n")
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("RESTIC_")
        }
        self.env.update(
            RESTIC_PASSWORD="oracle",
            RESTIC_REPOSITORY=str(base / "repo"),
            RESTIC_CACHE_DIR=str(base / "cache"),
        )
        self.run("init")

    def run(self, *args: str, tz: str = "UTC") -> str:
        proc = subprocess.run(
            ["restic", "-q", *args],
            env={**self.env, "TZ": tz},
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def backup(self, when: datetime, zone: str, host: str, tags: list[str]) -> None:
        local = when.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        tag_args = [arg for tag in tags for arg in ("--tag", tag)]
        self.run("backup", "--host", host, "--time", local, *tag_args, str(self.data), tz=zone)

    def snapshots(self) -> list[Snapshot]:
        return [
            Snapshot(
                time=parse_time(item["time"]),
                tree=item["tree"],
                paths=item["paths"],
                hostname=item["hostname"],
                tags=item.get("tags") or [],
                id=item["id"],
            )
            for item in json.loads(self.run("snapshots", "--json"))
        ]

    def forget(self, flags: list[str]) -> dict[str, list[str]]:
        """Snapshot id -> restic's matches (absent: removed)."""
        out: dict[str, list[str]] = {}
        for group in json.loads(self.run("forget", "--dry-run", "--json", *flags)):
            keep = group["keep"] or []
            reasons = group["reasons"] or []
            assert len(keep) == len(reasons)
            for snapshot, reason in zip(keep, reasons, strict=True):
                assert reason["snapshot"]["time"] == snapshot["time"]
                out[snapshot["id"]] = list(reason["matches"])
        return out


def _restic_flags(policy: RetentionPolicy) -> list[str]:
    flags: list[str] = []
    for key in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        value = getattr(policy, f"keep_{key}")
        if value:
            flags += [f"--keep-{key}", str(value)]
    if policy.keep_within is not None:
        hours, rest = divmod(int(policy.keep_within.total_seconds()), 3600)
        assert rest == 0
        flags += ["--keep-within", f"{hours // 24}d{hours % 24}h"]
    for entry in policy.keep_tags:
        flags += ["--keep-tag", entry]
    return flags


def _category(match: str) -> str | None:
    """A rule name shared by restic's matches and safehold's reasons."""
    if match.startswith(("within ", "has tags ", "tag pinned ")):
        return "within" if match.startswith("within") else "tags"
    if match in ("newest snapshot", "policy is empty"):
        return None
    return match.split(" (")[0]


def _compare(
    snapshots: list[Snapshot], decisions: list[Decision], restic: Mapping[str, list[str]]
) -> None:
    assert len(decisions) == len(snapshots)
    newest: dict[tuple[str, ...], int] = {}
    for snapshot in snapshots:
        key = (snapshot.hostname, *sorted(snapshot.paths))
        newest[key] = max(newest.get(key, snapshot.time.ns), snapshot.time.ns)
    for decision in decisions:
        sid = decision.snapshot.id
        ours = [c for c in map(_category, decision.reasons) if c is not None]
        theirs = [c for c in map(_category, restic.get(sid, [])) if c is not None]
        label = (
            f"{decision.snapshot.time} {sid[:8]}: ours {decision.reasons}, restic {restic.get(sid)}"
        )
        assert ours == theirs, label
        key = (decision.snapshot.hostname, *sorted(decision.snapshot.paths))
        is_newest = decision.snapshot.time.ns == newest[key]
        assert decision.keep == (sid in restic or is_newest), label


POLICIES = [
    RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=3),
    RetentionPolicy(keep_last=3, keep_hourly=5, keep_yearly=2),
    RetentionPolicy(keep_hourly=30, keep_daily=30),
    RetentionPolicy(keep_weekly=40, keep_monthly=30, keep_yearly=9),
    RetentionPolicy(keep_within=timedelta(days=40, hours=5), keep_daily=3),
    RetentionPolicy(keep_tags=["a", "a,b"], keep_monthly=2),
    RetentionPolicy(keep_tags=["b"]),
    RetentionPolicy(keep_last=5, keep_within=timedelta(days=3), keep_tags=["a"], keep_hourly=2),
]


@pytest.fixture(scope="module")
def random_history(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ResticRepo, list[Snapshot]]:
    rng = random.Random(20240531)
    repo = ResticRepo(tmp_path_factory.mktemp("oracle-random"))
    start = datetime(2022, 6, 1, tzinfo=UTC)
    moments: list[datetime] = []
    for _ in range(48):
        if moments and rng.random() < 0.5:  # cluster around an earlier one: same day or hour
            base = rng.choice(moments)
            moment = base + timedelta(seconds=rng.randint(-30 * 3600, 30 * 3600))
        else:
            moment = start + timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
        if moment not in moments:
            moments.append(moment)
    jobs = [
        (
            moment,
            rng.choice(ZONES),
            rng.choice(["h1", "h1", "h2"]),
            rng.choice([[], [], ["a"], ["b"], ["a", "b"]]),
        )
        for moment in moments
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: repo.backup(*job), jobs))
    return repo, repo.snapshots()


@pytest.mark.parametrize("policy", POLICIES, ids=[str(n) for n in range(len(POLICIES))])
def test_random_history_matches_restic(
    random_history: tuple[ResticRepo, list[Snapshot]], policy: RetentionPolicy
) -> None:
    repo, snapshots = random_history
    assert len(snapshots) >= 40
    assert len({s.time.offset for s in snapshots}) >= 5  # the zones really varied
    decisions = apply_retention(snapshots, policy)
    _compare(snapshots, decisions, repo.forget(_restic_flags(policy)))


def test_dst_history_matches_restic(tmp_path: Path) -> None:
    """Europe/Berlin around both 2024 changes, snapshots every 20-40 minutes near 02:00."""
    repo = ResticRepo(tmp_path)
    moments: list[datetime] = []
    for day in (
        datetime(2024, 3, 30, 22, 0, tzinfo=UTC),
        datetime(2024, 10, 26, 22, 5, tzinfo=UTC),
    ):
        moment = day
        for step in (0, 25, 30, 35, 20, 40, 30, 25, 30, 40, 35):
            moment += timedelta(minutes=step)
            moments.append(moment)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda m: repo.backup(m, "Europe/Berlin", "h", []), moments))
    snapshots = repo.snapshots()
    assert {s.time.offset for s in snapshots} == {3600, 7200}
    for policy in (
        RetentionPolicy(keep_hourly=8, keep_daily=5),
        RetentionPolicy(keep_hourly=100),
        RetentionPolicy(keep_last=4, keep_weekly=3),
    ):
        decisions = apply_retention(snapshots, policy)
        _compare(snapshots, decisions, repo.forget(_restic_flags(policy)))
