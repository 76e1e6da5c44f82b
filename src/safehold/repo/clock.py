"""The clock and host identity, injected so that tests control them."""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass

from safehold.repo.gotypes import GoTime


def local_now() -> GoTime:
    """Now, with the local UTC offset (restic writes local times)."""
    ns = time.time_ns()
    offset = time.localtime(ns // 1_000_000_000).tm_gmtoff
    return GoTime(ns, offset)


@dataclass(frozen=True)
class Host:
    hostname: str
    username: str
    uid: int
    gid: int
    pid: int

    @classmethod
    def current(cls) -> Host:
        try:
            username = getpass.getuser()
        except (KeyError, OSError):
            username = str(os.getuid())
        return cls(socket.gethostname(), username, os.getuid(), os.getgid(), os.getpid())
