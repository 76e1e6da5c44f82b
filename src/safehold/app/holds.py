"""Holds: snapshots that `forget` never removes, stored as safehold records `safehold/holds/<id>`
(kind `holds`, docs/format.md section 12).

Write-once, as restic stores everything: `hold` writes a hold record (`type` "hold": the
snapshot id, why, who, when) and `unhold` writes a release record (`type` "release": the ids
of the hold records it ends, the snapshot id, who, when). Nothing is rewritten or deleted, so
the history of who held and released what stays in the repository; a snapshot is held while
one of its hold records is named by no release. Evidence and incident snapshots are held when
they are taken (`AUTO_HOLD_REASONS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from safehold.errors import UsageError
from safehold.repo.gotypes import format_time
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot

KIND = "holds"
AUTO_HOLD_REASONS = ("evidence", "incident")


@dataclass(frozen=True)
class Hold:
    id: str  # the hold record's id
    snapshot: str  # the full snapshot id
    why: str
    who: str
    when: str  # RFC 3339

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "snapshot": self.snapshot, "why": self.why, "who": self.who,
                "when": self.when}  # fmt: skip


def list_holds(repo: Repository) -> list[Hold]:
    """The holds in force, oldest first; raises IntegrityError naming a corrupt record."""
    holds: list[Hold] = []
    released: set[str] = set()
    for record_id, document in repo.load_records(KIND):
        if document.get("type") == "release":
            released.update(str(hold) for hold in document.get("releases") or [])
        elif document.get("type") == "hold":
            holds.append(Hold(record_id, str(document.get("snapshot", "")),
                              str(document.get("why", "")), str(document.get("who", "")),
                              str(document.get("when", ""))))  # fmt: skip
    active = [hold for hold in holds if hold.id not in released]
    return sorted(active, key=lambda hold: (hold.when, hold.id))


def held_snapshots(repo: Repository) -> dict[str, str]:
    """Snapshot id -> why it is held (several holds joined with "; ")."""
    held: dict[str, str] = {}
    for hold in list_holds(repo):
        held[hold.snapshot] = f"{held[hold.snapshot]}; {hold.why}" if hold.snapshot in held \
            else hold.why  # fmt: skip
    return held


def hold_snapshot(repo: Repository, snapshot: Snapshot, why: str) -> Hold:
    """Write a hold on `snapshot`; UsageError for an empty `why` (a hold must say why)."""
    why = " ".join(why.split())
    if not why:
        raise UsageError("a hold needs a reason", hint='add --why "what it is kept for"')
    when = format_time(repo.clock())
    who = f"{repo.host.username}@{repo.host.hostname}"
    document = {"type": "hold", "snapshot": snapshot.id, "why": why, "who": who, "when": when}
    with repo.locked(exclusive=False):
        record_id = repo.save_record(KIND, document)
    return Hold(record_id, snapshot.id, why, who, when)


def release_snapshot(repo: Repository, snapshot: Snapshot) -> list[Hold]:
    """End every hold on `snapshot` with one release record; returns the holds it ended.
    UsageError when the snapshot is not held."""
    ended = [hold for hold in list_holds(repo) if hold.snapshot == snapshot.id]
    if not ended:
        raise UsageError(f"snapshot {snapshot.short_id} is not held",
                         hint="`safehold holds` lists the held snapshots")  # fmt: skip
    document = {"type": "release", "releases": [hold.id for hold in ended],
                "snapshot": snapshot.id, "who": f"{repo.host.username}@{repo.host.hostname}",
                "when": format_time(repo.clock())}  # fmt: skip
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)
    return ended


def end_holds(repo: Repository, ended: list[Hold]) -> None:
    """End exactly these holds (not every hold on their snapshots) with one release record."""
    if not ended:
        return
    document = {"type": "release", "releases": [hold.id for hold in ended],
                "snapshot": ended[0].snapshot, "who": f"{repo.host.username}@{repo.host.hostname}",
                "when": format_time(repo.clock())}  # fmt: skip
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)


def hold_if_evidence(repo: Repository, snapshot: Snapshot) -> Hold | None:
    """Hold a snapshot just taken for `evidence` or `incident`, so no forget removes it."""
    if snapshot.reason not in AUTO_HOLD_REASONS:
        return None
    note = snapshot.safehold.get("note")
    why = f"{snapshot.reason} snapshot" + (f": {note}" if note else "")
    return hold_snapshot(repo, snapshot, why)


def release_holds(repo: Repository, snapshot_id: str, hold_ids: list[str]) -> None:
    """End only the holds `hold_ids` on a snapshot (one release record); other holds on it,
    a person's own for example, stay in force."""
    document = {"type": "release", "releases": list(hold_ids), "snapshot": snapshot_id,
                "who": f"{repo.host.username}@{repo.host.hostname}",
                "when": format_time(repo.clock())}  # fmt: skip
    with repo.locked(exclusive=False):
        repo.save_record(KIND, document)
