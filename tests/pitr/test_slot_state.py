"""The streamer's replication slot, as status and watch word it (pure)."""

from __future__ import annotations

from safehold.pitr.stream import SlotState


def test_a_slot_in_use_and_reserved_is_no_problem() -> None:
    slot = SlotState("safehold", True, True, 16 * 1024 * 1024, "reserved")
    assert slot.problem() is None and not slot.lost


def test_each_slot_trouble_has_its_words() -> None:
    missing = SlotState("safehold", exists=False)
    assert "does not exist" in str(missing.problem()) and not missing.lost
    idle = SlotState("safehold", True, False, 3 * 1024 * 1024 * 1024, "extended")
    assert "no streamer uses the replication slot safehold" in str(idle.problem())
    assert "the server keeps 3.0 GiB of WAL for it" in str(idle.problem())
    unreserved = SlotState("safehold", True, False, 1, "unreserved")
    assert unreserved.lost and "max_slot_wal_keep_size" in str(unreserved.problem())
    lost = SlotState("safehold", True, False, None, "lost")
    assert lost.lost and "the archive has a gap" in str(lost.problem())
    assert lost.to_json()["problem"] == lost.problem()
