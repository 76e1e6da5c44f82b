"""Damage stays local, as in restic: the rule for a stored file that cannot be used.

A snapshot file that cannot be read, decrypted or parsed is one lost snapshot, never a lost
repository: listings skip it with a warning that names it (`SafeholdWarning`, printed once by
the CLI), every command that works on the other snapshots goes on, and `forget ID` removes it.
Only damage is skipped: a storage failure (unreachable server, refused login) still stops the
command, because skipping there would make a prune drop data that a snapshot still uses.

A damaged index file is different: the index tells where every blob is, so a command that
needs it stops with `DamagedIndexError`, whose hint names `safehold repair index`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from safehold.errors import SafeholdWarning


@dataclass(frozen=True)
class DamagedObject:
    """A stored file that is there but cannot be used: `name` like `snapshots/<id>`."""

    name: str
    object_id: str
    reason: str

    @property
    def short_id(self) -> str:
        return self.object_id[:8]


def damaged_snapshot_message(damaged: DamagedObject) -> str:
    return (
        f"skipping damaged snapshot {damaged.short_id} ({damaged.reason}); the other "
        f"snapshots are not affected; `safehold forget {damaged.short_id}` removes it"
    )


def warn_damaged_snapshot(damaged: DamagedObject) -> None:
    """Tell the user (through the warnings mechanism: core code never prints)."""
    warnings.warn(SafeholdWarning(damaged_snapshot_message(damaged)), stacklevel=3)
