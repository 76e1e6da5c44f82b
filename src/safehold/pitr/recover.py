"""Build a data folder that recovers to a target: the base backup's files, the WAL it needs
in `pg_wal/`, `recovery.signal` and the recovery settings in `postgresql.auto.conf`.

The WAL is fetched from the repository before the server starts (one opened repository, not
one `safehold` start per segment), straight into `pg_wal/`; `restore_command` is then `false`
(exit 1 = "not in the archive"), which makes PostgreSQL read each file from `pg_wal/`.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from safehold.pitr.basebackup import BASE_FILE
from safehold.pitr.chain import BaseBackup
from safehold.pitr.errors import PitrError
from safehold.pitr.store import StoredWal, fetch_to_folder
from safehold.pitr.walnames import format_lsn
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository

WAL_FETCHERS = 2  # threads fetching WAL segments while the base backup is unpacked

RECOVERY_MARK = "# safehold point-in-time recovery"
_HAS_FILTER = hasattr(tarfile, "tar_filter")


def _check_member(member: tarfile.TarInfo) -> None:
    """A base backup holds relative paths inside the cluster only; refuse anything else."""
    parts = Path(member.name).parts
    bad_link = (member.issym() or member.islnk()) and (
        member.linkname.startswith("/") or ".." in Path(member.linkname).parts
    )
    if member.name.startswith("/") or ".." in parts or bad_link or member.isdev():
        raise PitrError(f"the base backup holds an unsafe path {member.name!r}: not unpacked")


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: a moment, a transaction id or an LSN (stop just before it),
    or None for the end of the archived WAL."""

    time: datetime | None = None
    xid: int | None = None
    lsn: int | None = None

    def settings(self) -> list[str]:
        if self.time is not None:
            return [f"recovery_target_time = '{self.time.isoformat(sep=' ')}'"]
        if self.xid is not None:
            return [f"recovery_target_xid = '{self.xid}'", "recovery_target_inclusive = off"]
        if self.lsn is not None:
            return [
                f"recovery_target_lsn = '{format_lsn(self.lsn)}'",
                "recovery_target_inclusive = off",
            ]
        return []

    def describe(self) -> str:
        if self.time is not None:
            return f"the moment {self.time.isoformat(sep=' ', timespec='seconds')}"
        if self.xid is not None:
            return f"just before transaction {self.xid}"
        if self.lsn is not None:
            return f"just before LSN {format_lsn(self.lsn)}"
        return "the end of the archived WAL"


def extract_base(repo: Repository, base: BaseBackup, datadir: Path) -> int:
    """Stream the base backup's tar out of the repository into `datadir`; returns bytes."""
    read_fd, write_fd = os.pipe()
    written: list[int] = []
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb", buffering=1024 * 1024) as out:
                written.append(dump_file(repo, base.snapshot, f"/{base.source}/{BASE_FILE}", out))
        except BaseException as err:  # handed to the reading side
            failure.append(err)

    thread = threading.Thread(target=produce, name="basebackup-read", daemon=True)
    thread.start()
    try:
        with (
            open(read_fd, "rb", buffering=1024 * 1024) as pipe,
            tarfile.open(fileobj=pipe, mode="r|") as tar,
        ):
            for member in tar:
                _check_member(member)
                if _HAS_FILTER:
                    tar.extract(member, datadir, filter="tar")
                else:  # Python before 3.11.4: _check_member is the whole filter
                    tar.extract(member, datadir)
    except (tarfile.TarError, OSError) as err:
        thread.join()
        if failure:
            raise failure[0] from None
        raise PitrError(f"the base backup {base.label} could not be unpacked: {err}") from None
    thread.join()
    if failure:
        raise failure[0]
    (datadir / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
    for leftover in ("backup_manifest", "postmaster.pid", "postmaster.opts"):
        (datadir / leftover).unlink(missing_ok=True)
    return written[0] if written else 0


def write_recovery(datadir: Path, target: RecoveryTarget) -> None:
    """recovery.signal and the settings that recover to `target`, then promote."""
    lines = [
        "",
        RECOVERY_MARK,
        "restore_command = 'false'  # the WAL is already in pg_wal/, fetched by safehold",
        "recovery_target_timeline = 'latest'",
        *target.settings(),
        "recovery_target_action = 'promote'",
        "archive_mode = off  # a restored copy must not archive into its origin's repository",
        "",
    ]
    with open(datadir / "postgresql.auto.conf", "a") as conf:
        conf.write("\n".join(lines))
    (datadir / "recovery.signal").touch()


def build_datadir(
    repo: Repository, base: BaseBackup, wal: list[StoredWal], datadir: Path, target: RecoveryTarget
) -> tuple[int, int]:
    """Fill `datadir` (empty) so that starting it recovers to `target`: (base bytes, WAL
    bytes). The base backup is unpacked while `WAL_FETCHERS` threads fetch the WAL into
    `pg_wal/` (decompression, hashing and writing release the GIL: on 2 cores this takes
    about the time of the longer of the two instead of their sum)."""
    wal_dir = datadir / "pg_wal"
    wal_dir.mkdir(parents=True, exist_ok=True)  # the tar's own pg_wal/ member finds it there
    with ThreadPoolExecutor(1 + WAL_FETCHERS, thread_name_prefix="pitr-restore") as pool:
        base_job = pool.submit(extract_base, repo, base, datadir)
        wal_jobs = [
            pool.submit(fetch_to_folder, repo, wal[i::WAL_FETCHERS], wal_dir)
            for i in range(WAL_FETCHERS)
            if wal[i::WAL_FETCHERS]
        ]
        base_bytes = base_job.result()
        wal_bytes = sum(job.result() for job in wal_jobs)
    write_recovery(datadir, target)
    return base_bytes, wal_bytes


def check_empty_datadir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PitrError(
            f"{path} exists and is not an empty folder",
            hint="--into a data folder needs a new (or empty) folder",
        )


def give_to(datadir: Path, owner: str | None) -> None:
    """Make `datadir` 0700 and (running as root) owned by `owner`, as PostgreSQL demands."""
    if owner:
        for path in [datadir, *datadir.rglob("*")]:
            shutil.chown(path, owner, owner)
    datadir.chmod(0o700)
