"""How point-in-time recovery of one source stands: the recoverable window, the archive lag,
gaps. Read by `status` (the PITR item), `metrics` and `watch` (health/).

The archive lag is the age of the newest WAL file in the repository, except when the server
says nothing waits: when its current segment directly follows the newest archived one (an idle
server writes no WAL, so the newest segment ages without anything being at risk), the lag is
0. What the current, unfinished segment holds is bounded by `archive_timeout`, which
`pitr setup` sets from the RPO. When the server cannot be asked, the repository's age stands.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from safehold.pitr.chain import ChainReport, base_backups, build_chain
from safehold.pitr.store import WalArchive
from safehold.pitr.stream import SlotState, read_slot
from safehold.pitr.walnames import parse_wal_name
from safehold.plan.models import PostgresConfig
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.postgres import PostgresSource


@dataclass
class PitrHealth:
    source: str
    report: ChainReport | None = None
    lag_s: float | None = None  # None: nothing archived yet
    server_idle: bool | None = None  # None: the server was not asked (or did not answer)
    error: str = ""
    problems: list[str] = field(default_factory=list)
    slot: SlotState | None = None  # `wal = "stream"`: the streamer's slot (None: not asked)

    @property
    def window(self) -> tuple[float, float] | None:
        if self.report is None or not self.report.windows:
            return None
        return (min(w.start for w in self.report.windows), max(w.end for w in self.report.windows))

    @property
    def gaps(self) -> int:
        if self.report is None:
            return 0
        return sum(len(chain.gaps) for chain in self.report.timelines.values())

    def to_json(self) -> dict[str, Any]:
        window = self.window
        return {
            "source": self.source, "lag_seconds": self.lag_s, "gaps": self.gaps,
            "window": {"from": window[0], "to": window[1]} if window else None,
            "server_idle": self.server_idle, "problems": self.problems, "error": self.error,
            "slot": self.slot.to_json() if self.slot else None,
        }  # fmt: skip


def _ask_server(
    config: PostgresConfig, segment: bool = True
) -> tuple[str | None, SlotState | None]:
    """The segment the server writes now (with `segment`) and, when it streams, its slot
    (None, None when the server cannot be asked)."""
    source = PostgresSource(config.name, config.url, config.database_names() or None)
    location = source.location
    with (
        contextlib.suppress(psycopg.Error, OSError),
        psycopg.connect(
            location.conninfo(location.dbname or "postgres"),
            password=location.password, autocommit=True, connect_timeout=10,
        ) as conn,
    ):  # fmt: skip
        current = None
        if segment:
            row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
            current = str(row[0]) if row else None
        slot = read_slot(conn, config.wal_slot) if config.wal == "stream" else None
        return current, slot
    return None, None


def streamer_slot(config: PostgresConfig) -> SlotState | None:
    """The slot of a streaming source (`wal = "stream"`), None when the source does not
    stream or its server cannot be asked."""
    return _ask_server(config, segment=False)[1] if config.wal == "stream" else None


def pitr_health(
    repo: Repository,
    snapshots: list[Snapshot],
    config: PostgresConfig,
    now: datetime,
    *,
    ask_server: bool = True,
) -> PitrHealth:
    health = PitrHealth(config.name)
    archive = WalArchive.load(repo)
    report = build_chain(archive, base_backups(snapshots, config.name))
    health.report = report
    health.problems = list(report.problems)
    newest = report.newest_archived
    if newest is None:
        return health
    health.lag_s = max(0.0, now.timestamp() - newest)
    if not ask_server:
        return health
    current, health.slot = _ask_server(config)
    if health.slot is not None and health.slot.wal_status == "lost":
        health.problems.append(str(health.slot.problem()))
    parsed = parse_wal_name(current) if current else None
    if parsed is None:
        return health
    chain = report.timelines.get(parsed.timeline)
    size = report.segment_size
    if chain is not None and chain.segments and chain.last >= parsed.number(size) - 1:
        health.server_idle = True
        health.lag_s = 0.0
    else:
        health.server_idle = False
    return health
