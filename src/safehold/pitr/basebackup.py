"""Base backups: `pg_basebackup` streamed as one tar straight into a snapshot.

`pg_basebackup -D - -Ft -X none` writes the whole cluster (with its backup manifest injected)
to stdout; the archiver chunks it as it comes, so there is no full-size temp file, and
content-defined chunking makes next week's base backup store only what changed. WAL is not
included (`-X none`): the archive (`wal-push`) holds it, and a base backup is usable once the
segments from its start to its end point are archived (`wal status` says so).

The snapshot is `/<source>/base.tar`, tagged `basebackup` and `safehold-basebackup`, named
like every other snapshot (`<app>-<env>-YYYY-MM-DD-basebackup`); its `safehold.basebackup`
field records the start and end LSN, the timeline, when it started and finished, the WAL
segment size and the cluster's system identifier.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import psycopg

from safehold.app.backup import slug, snapshot_name, unique_name
from safehold.fs.archiver import Archiver, BackupItem, BackupOptions, BackupStats
from safehold.pitr.errors import PitrError
from safehold.pitr.walnames import format_lsn, parse_lsn
from safehold.repo.progress import ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import BASEBACKUP_REASON, BASEBACKUP_TAG, Snapshot
from safehold.sources.dbtools import DumpError, tool_failure
from safehold.sources.postgres import PgLocation, PostgresSource
from safehold.sources.process import ProcessExit, stream_process

BASE_FILE = "base.tar"
_START = re.compile(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)")
_TIMELINE = re.compile(r"START TIMELINE: (\d+)")
_WANTED = ("backup_label", "backup_manifest")


class TarSniffer:
    """Reads a tar stream as it flows past (`feed`) and keeps the members it wants: the
    backup_label (start LSN, timeline) and the backup_manifest (its WAL range: the end LSN)."""

    def __init__(self, wanted: tuple[str, ...] = _WANTED) -> None:
        self.wanted = wanted
        self.members: dict[str, bytes] = {}
        self._buffer = bytearray()
        self._skip = 0  # bytes of the current member (and padding) still to pass
        self._collect: tuple[str, int] | None = None  # (name, size) being collected
        self._data = bytearray()
        self._done = False

    def feed(self, data: memoryview) -> None:
        view = memoryview(bytes(data))
        while view and not self._done:
            if self._skip:
                take = min(self._skip, len(view))
                if self._collect is not None:
                    name, size = self._collect
                    need = size - len(self._data)
                    self._data += view[: min(take, max(need, 0))]
                    if len(self._data) >= size:
                        self.members[name] = bytes(self._data[:size])
                        self._collect = None
                        self._data = bytearray()
                self._skip -= take
                view = view[take:]
                continue
            need = 512 - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) == 512:
                self._header(bytes(self._buffer))
                self._buffer = bytearray()

    def _header(self, block: bytes) -> None:
        if not block.strip(b"\0"):
            return  # end-of-archive blocks
        name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
        try:
            size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            self._done = True  # not a tar we understand: stop looking, the bytes still flow
            return
        self._skip = (size + 511) // 512 * 512
        if name in self.wanted and size:
            self._collect = (name, size)
            self._data = bytearray()


@dataclass
class BaseBackupResult:
    snapshot: Snapshot
    stats: BackupStats
    info: dict[str, Any]


def server_facts(source: PostgresSource) -> dict[str, Any]:
    """The WAL segment size and system identifier (what a restore must match)."""
    location = source.location
    facts: dict[str, Any] = {}
    try:
        with psycopg.connect(
            location.conninfo(location.dbname or "postgres"),
            password=location.password, autocommit=True, connect_timeout=30,
        ) as conn:  # fmt: skip
            row = conn.execute(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
            ).fetchone()
            facts["segment_size"] = int(row[0]) if row else None
            facts["server_version"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            with contextlib.suppress(psycopg.Error):
                sysid = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
                facts["system_identifier"] = int(sysid[0]) if sysid else None
    except psycopg.Error as err:
        raise PitrError(
            f"cannot connect to {location.redacted} for a base backup: {str(err).strip()}"
        ) from None
    return facts


def switch_wal(location: PgLocation) -> None:
    """Ask the server to close its current segment, so the end of the base backup gets
    archived now rather than at the next archive_timeout (needs superuser or a GRANT)."""
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(
            location.conninfo(location.dbname or "postgres"),
            password=location.password, autocommit=True, connect_timeout=30,
        ) as conn,
    ):  # fmt: skip
        conn.execute("SELECT pg_switch_wal()")


def _wal_range(sniffer: TarSniffer, what: str) -> dict[str, str]:
    """Start LSN and timeline from the backup_label, end LSN from the manifest's WAL range."""
    label = sniffer.members.get("backup_label", b"").decode("utf-8", "replace")
    start, timeline = _START.search(label), _TIMELINE.search(label)
    try:
        manifest = json.loads(sniffer.members.get("backup_manifest", b"{}"))
        ranges = manifest.get("WAL-Ranges") or []
        end = str(ranges[-1]["End-LSN"])
    except (ValueError, KeyError, IndexError, TypeError):
        end = ""
    if start is None or timeline is None or not end:
        raise DumpError(
            f"{what}: no backup_label or backup manifest with its WAL range in the tar stream",
            hint="PostgreSQL 13 or newer writes the manifest",
        )
    return {"start_lsn": start.group(1), "timeline": timeline.group(1), "end_lsn": end}


def take_base_backup(
    repo: Repository,
    source: PostgresSource,
    *,
    app: str,
    env: str,
    options: BackupOptions | None = None,
    progress: ProgressCallback | None = None,
) -> BaseBackupResult:
    """Stream `pg_basebackup` into a new snapshot (see the module docstring)."""
    facts = server_facts(source)
    location = source.location
    argv = [
        source.tool("pg_basebackup"), "-d", location.conninfo(location.dbname or "postgres"),
        "-D", "-", "-Ft", "-X", "none", "-c", "fast", "-v", "--no-password",
    ]  # fmt: skip
    secrets = [location.password]
    ended: dict[str, str] = {}
    what = f"pg_basebackup of {location.redacted}"
    sniffer = TarSniffer()

    def check(end: ProcessExit) -> None:
        if end.returncode != 0:
            raise DumpError(tool_failure(what, end.returncode, end.stderr, secrets))
        if not end.read_to_end:
            raise DumpError(f"{what}: its output was not read to the end")
        ended.update(_wal_range(sniffer, what))

    @contextlib.contextmanager
    def stream() -> Iterator[BinaryIO]:
        with stream_process(
            argv, env=source.pg_env(), cwd="/", check=check, on_data=sniffer.feed,
            cannot_run=lambda err: PitrError(
                f"cannot run {argv[0]}: {err.strerror}",
                hint="install the PostgreSQL client tools (Debian: postgresql-client)",
            ),
        ) as out:  # fmt: skip
            yield out  # type: ignore[misc]

    started = time.time()
    info: dict[str, Any] = {"source": source.name, "started_at": round(started, 3), **facts}

    def finalize(stats: BackupStats, root: str) -> dict[str, object]:
        if stats.errors:
            raise PitrError(f"the base backup failed: {stats.errors[0][1]}")
        if not ended:
            raise PitrError(f"{what} did not finish")
        info.update(
            start_lsn=format_lsn(parse_lsn(ended["start_lsn"])),
            end_lsn=format_lsn(parse_lsn(ended["end_lsn"])),
            timeline=int(ended["timeline"]),
            finished_at=round(time.time(), 3),
        )
        return {"basebackup": info}

    with repo.locked(exclusive=False):
        when = repo.clock()
        name = unique_name(
            snapshot_name(f"{app}-{env}", when, BASEBACKUP_REASON, None), when,
            {snapshot.name for snapshot in repo.list_snapshots()},
        )  # fmt: skip
        meta: dict[str, object] = {"name": name, "reason": BASEBACKUP_REASON, "app": app,
                                   "env": env}  # fmt: skip
        archiver = Archiver(repo, options or BackupOptions(), progress)
        result = archiver.backup_items(
            [BackupItem([source.name.encode(), BASE_FILE.encode()], stream=stream,
                        parents_on_disk=False)],
            paths=[f"/{source.name}"],
            tags=[BASEBACKUP_REASON, BASEBACKUP_TAG, f"app={slug(app)}", f"env={slug(env)}"],
            safehold_meta=meta, time=when, finalize_meta=finalize,
        )  # fmt: skip
    if result.stats.errors:
        path, message = result.stats.errors[0]
        raise PitrError(f"the base backup failed: {path}: {message}")
    switch_wal(location)
    return BaseBackupResult(result.snapshot, result.stats, info)
