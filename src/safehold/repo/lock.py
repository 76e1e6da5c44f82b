"""Lock files, compatible both ways with restic's: `locks/<id>`, encrypted JSON.

    {"time", "exclusive", "hostname", "username", "pid", "uid", "gid"}

Exclusive locks (prune, forget, key removal) conflict with every other lock; shared locks
(backup, restore, check) conflict only with exclusive ones. A lock is stale when it is older
than 30 minutes, or when it was made on this host by a process that no longer exists;
holders refresh their lock every 5 minutes (write a new one, then delete the old one), exactly
as restic does, so neither tool ever removes the other's live lock. A holder that cannot
refresh in time gives up its operation before its lock could count as stale (LockTimings).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from safehold.repo.format import encode_json
from safehold.repo.gotypes import GoTime, format_time, parse_time

STALE_AFTER_NS = 30 * 60 * 1_000_000_000
STALE_AFTER_S = STALE_AFTER_NS / 1_000_000_000
REFRESH_INTERVAL_S = 5 * 60


@dataclass(frozen=True)
class LockTimings:
    """When a held lock is refreshed, and when its holder gives up the operation.

    The defaults are restic's (internal/repository/lock.go): refresh every 5 minutes, and give
    up when the last successful refresh is 30 - 1.5 x 5 = 22.5 minutes old, while the lock last
    written is still 7.5 minutes away from counting as stale on any host. A failed refresh is
    retried every `retry_interval_s` until then. Tests pass short intervals.

    Raises ValueError when the holder would give up before its first refresh.
    """

    refresh_interval_s: float = REFRESH_INTERVAL_S
    retry_interval_s: float = 30.0
    give_up_after_s: float = STALE_AFTER_S - 1.5 * REFRESH_INTERVAL_S

    def __post_init__(self) -> None:
        if self.retry_interval_s <= 0 or self.refresh_interval_s <= 0:
            raise ValueError("lock refresh intervals must be positive")
        if self.give_up_after_s <= self.refresh_interval_s:
            raise ValueError("a lock holder must not give up before its first refresh")


# Read when a lock is taken (Repository.lock_timings overrides it for one repository).
DEFAULT_LOCK_TIMINGS = LockTimings()


@dataclass(frozen=True)
class Lock:
    time: GoTime
    exclusive: bool
    hostname: str
    username: str
    pid: int
    uid: int = 0
    gid: int = 0

    def encode(self) -> bytes:
        return encode_json(
            {
                "time": format_time(self.time),
                "exclusive": self.exclusive,
                "hostname": self.hostname,
                "username": self.username,
                "pid": self.pid,
                "uid": self.uid,
                "gid": self.gid,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Lock:
        value = json.loads(raw)
        return cls(
            time=parse_time(value["time"]),
            exclusive=bool(value.get("exclusive")),
            hostname=str(value.get("hostname") or ""),
            username=str(value.get("username") or ""),
            pid=int(value.get("pid") or 0),
            uid=int(value.get("uid") or 0),
            gid=int(value.get("gid") or 0),
        )

    def is_stale(self, now_ns: int, hostname: str) -> bool:
        if now_ns - self.time.ns > STALE_AFTER_NS:
            return True
        if self.hostname != hostname:
            return False
        return not _process_exists(self.pid)

    def conflicts_with(self, exclusive: bool) -> bool:
        return self.exclusive or exclusive

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        return (
            f"{kind} lock by PID {self.pid} on {self.hostname} "
            f"({self.username}) since {format_time(self.time)}"
        )


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
