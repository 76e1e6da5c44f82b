"""What `rescue` decides for one object from its versions and delete markers (no server: the
real-server test is tests/cli/test_rescue.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.app.rescue import RescueStep, plan_steps, step_for
from safehold.backends.s3versions import ObjectVersion

T0 = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
AS_OF = T0 + timedelta(hours=1)


def version(vid: str, minutes: int, *, marker: bool = False, latest: bool = False,
            etag: str = "") -> ObjectVersion:  # fmt: skip
    return ObjectVersion("data/ab/x", vid, T0 + timedelta(minutes=minutes), marker, latest, 10,
                         "" if marker else (etag or f'"{vid}"'))  # fmt: skip


def test_an_untouched_object_needs_nothing() -> None:
    assert step_for([version("v1", 10, latest=True)], AS_OF) is None


def test_deleted_after_the_time_is_undeleted_by_removing_every_newer_marker() -> None:
    versions = [version("v1", 10), version("m1", 70, marker=True),
                version("m2", 80, marker=True, latest=True)]  # fmt: skip
    assert step_for(versions, AS_OF) == RescueStep(
        "data/ab/x", "unhide", "v1", ("m2", "m1"), T0 + timedelta(minutes=10)
    )


def test_overwritten_after_the_time_is_put_back_from_the_version_then() -> None:
    versions = [version("v1", 10), version("v2", 50), version("v3", 70),
                version("m1", 80, marker=True, latest=True)]  # fmt: skip
    step = step_for(versions, AS_OF)
    assert step is not None and (step.kind, step.version_id) == ("put-back", "v2")
    # once put back (a new version with the same content), nothing more to do
    again = [*versions[:3], version("m1", 80, marker=True),
             version("v4", 90, latest=True, etag='"v2"')]  # fmt: skip
    assert step_for(again, AS_OF) is None


def test_written_after_the_time_is_hidden_and_deleted_then_stays_deleted() -> None:
    assert step_for([version("v1", 70, latest=True)], AS_OF) == RescueStep("data/ab/x", "hide")
    assert step_for([version("v1", 70), version("m1", 80, marker=True, latest=True)],
                    AS_OF) is None  # fmt: skip
    deleted_then = [version("v1", 10), version("m1", 20, marker=True),
                    version("v2", 70, latest=True)]  # fmt: skip
    assert step_for(deleted_then, AS_OF) == RescueStep("data/ab/x", "hide")


def test_plan_steps_groups_by_name_and_counts() -> None:
    other = ObjectVersion("config", "c1", T0, False, True, 5, '"c1"')
    steps, objects, seen, unchanged = plan_steps(
        [version("v1", 10), version("m1", 70, marker=True, latest=True), other], AS_OF
    )
    assert [s.name for s in steps] == ["data/ab/x"]
    assert (objects, seen, unchanged) == (2, 3, 1)
