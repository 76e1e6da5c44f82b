"""Prometheus metrics in the text exposition format, for node_exporter's textfile collector
(`[metrics] textfile`, rewritten by every watch) and `safehold metrics`.

Everything about backups comes from the repositories (the same observation the watch
makes); job and alert outcomes come from the state folder. Every sample carries `app` and
`env` labels."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from safehold.alerts.store import StateStore, parse_time
from safehold.health.observe import Observation, OpenRepo, observe, rpo_of
from safehold.plan.models import Plan

_HELP: dict[str, tuple[str, str]] = {
    "safehold_destination_up": ("gauge", "1 when the destination's repository can be read"),
    "safehold_repository_size_bytes": ("gauge", "bytes stored in the destination's repository"),
    "safehold_snapshots": ("gauge", "snapshots of this plan in the destination"),
    "safehold_object_lock_earliest_retain_until_seconds": (
        "gauge",
        "earliest S3 Object Lock retain-until among the objects of the newest snapshot",
    ),
    "safehold_snapshot_last_timestamp_seconds": (
        "gauge",
        "time of the newest snapshot of this plan in the destination",
    ),
    "safehold_snapshot_size_bytes": ("gauge", "size of the data in the newest snapshot"),
    "safehold_snapshot_added_bytes": ("gauge", "new data the newest snapshot added"),
    "safehold_source_last_success_timestamp_seconds": (
        "gauge",
        "time of the newest good backup of the source (any reachable destination)",
    ),
    "safehold_source_rpo_measured_seconds": (
        "gauge",
        "age of the newest good backup of the source: the data a restore now would lose",
    ),
    "safehold_source_rpo_target_seconds": ("gauge", "the source's RPO"),
    "safehold_job_last_success_timestamp_seconds": ("gauge", "when the job last succeeded"),
    "safehold_job_last_failure_timestamp_seconds": ("gauge", "when the job last failed"),
    "safehold_job_last_ok": ("gauge", "1 when the job's last run succeeded, else 0"),
    "safehold_drill_last_timestamp_seconds": ("gauge", "when the newest drill finished"),
    "safehold_drill_passed": ("gauge", "1 when the newest drill passed, else 0"),
    "safehold_wal_archive_lag_seconds": (
        "gauge",
        "age of the newest archived WAL file (0 when the server has nothing waiting)",
    ),
    "safehold_wal_gaps": ("gauge", "gaps in the archived WAL (missing segment runs)"),
    "safehold_wal_slot_active": ("gauge", "1 when a streamer uses the replication slot, else 0"),
    "safehold_wal_slot_retained_bytes": (
        "gauge",
        "WAL the server keeps for the streamer's replication slot",
    ),
    "safehold_pitr_window_start_timestamp_seconds": (
        "gauge",
        "the oldest moment point-in-time recovery can restore to",
    ),
    "safehold_pitr_window_end_timestamp_seconds": (
        "gauge",
        "the newest moment point-in-time recovery can restore to",
    ),
    "safehold_drill_duration_seconds": ("gauge", "how long the newest drill took"),
    "safehold_rto_measured_seconds": ("gauge", "restore time measured by the newest drill"),
    "safehold_rto_target_seconds": ("gauge", "the plan's RTO"),
    "safehold_drill_data_age_seconds": (
        "gauge",
        "age of the snapshot the newest drill restored, when it ran (RPO measured by the drill)",
    ),
    "safehold_alert_last_delivery_ok": (
        "gauge",
        "1 when the last alert (or test) sent to the channel was delivered, else 0",
    ),
}


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def _stamp(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


def collect_metrics(
    plan: Plan, now: datetime, open_repo: OpenRepo, store: StateStore | None
) -> list[Sample]:
    return observation_samples(observe(plan, now, open_repo), store)


def observation_samples(observation: Observation, store: StateStore | None) -> list[Sample]:
    plan = observation.plan
    base = {"app": plan.app, "env": plan.env}
    samples: list[Sample] = []

    def add(name: str, value: float, **labels: str) -> None:
        samples.append(Sample(name, float(value), {**base, **labels}))

    for view in observation.destinations:
        name = view.destination.name
        add("safehold_destination_up", 1 if view.reachable else 0, destination=name)
        if view.repo is None:
            continue
        size = _repository_size(view.repo)
        if size is not None:
            add("safehold_repository_size_bytes", size, destination=name)
        add("safehold_snapshots", len(view.snapshots), destination=name)
        if view.locks is not None and view.locks.earliest is not None:
            add(
                "safehold_object_lock_earliest_retain_until_seconds",
                _stamp(view.locks.earliest),
                destination=name,
            )
        if view.snapshots:
            newest = view.snapshots[-1]
            add(
                "safehold_snapshot_last_timestamp_seconds",
                _stamp(newest.time.to_datetime()),
                destination=name,
            )
            summary = newest.safehold.get("summary") or {}
            if isinstance(summary, dict):
                for key, metric in (
                    ("bytes_total", "safehold_snapshot_size_bytes"),
                    ("bytes_added", "safehold_snapshot_added_bytes"),
                ):
                    if isinstance(summary.get(key), int):
                        add(metric, summary[key], destination=name)
    if observation.reachable:
        for source in plan.sources:
            add(
                "safehold_source_rpo_target_seconds",
                rpo_of(plan, source.name).total_seconds(),
                source=source.name,
            )
            good = observation.newest_good(source.name)
            if good is None:
                continue
            taken = good[0].time.to_datetime()
            add("safehold_source_last_success_timestamp_seconds", _stamp(taken), source=source.name)
            add(
                "safehold_source_rpo_measured_seconds",
                round(max(0.0, (observation.now - taken).total_seconds()), 3),
                source=source.name,
            )
    for wal_source, health in observation.pitr.items():
        if health.lag_s is not None:
            add("safehold_wal_archive_lag_seconds", round(health.lag_s, 3), source=wal_source)
        add("safehold_wal_gaps", health.gaps, source=wal_source)
        if health.slot is not None:
            add("safehold_wal_slot_active", 1 if health.slot.active else 0, source=wal_source)
            if health.slot.retained_bytes is not None:
                add("safehold_wal_slot_retained_bytes", health.slot.retained_bytes,
                    source=wal_source)  # fmt: skip
        window = health.window
        if window is not None:
            add("safehold_pitr_window_start_timestamp_seconds", window[0], source=wal_source)
            add("safehold_pitr_window_end_timestamp_seconds", window[1], source=wal_source)
    add("safehold_rto_target_seconds", plan.targets.rto.total_seconds())
    drill = observation.drill
    if drill is not None:
        add("safehold_drill_last_timestamp_seconds", _stamp(drill.finished))
        add("safehold_drill_passed", 1 if drill.passed else 0)
        add("safehold_drill_duration_seconds", round(drill.duration_s, 3))
        add("safehold_rto_measured_seconds", round(drill.rto_measured_s, 3))
        add("safehold_drill_data_age_seconds", round(drill.data_age_s, 3))
    if store is not None:
        samples.extend(_state_samples(store, base))
    return samples


def _state_samples(store: StateStore, base: dict[str, str]) -> list[Sample]:
    samples: list[Sample] = []
    for job, record in sorted(store.read("jobs").items()):
        if not isinstance(record, dict):
            continue
        labels = {**base, "job": job}
        for key, name in (
            ("last_success", "safehold_job_last_success_timestamp_seconds"),
            ("last_failure", "safehold_job_last_failure_timestamp_seconds"),
        ):
            moment = parse_time(record.get(key))
            if moment is not None:
                samples.append(Sample(name, _stamp(moment), labels))
        if record.get("status") in ("ok", "failed"):
            samples.append(
                Sample("safehold_job_last_ok", 1.0 if record["status"] == "ok" else 0.0, labels)
            )
    channels = store.read("alerts").get("channels", {})
    for channel, record in sorted(channels.items()):
        keys = ("last_ok", "last_failed", "last_test_ok", "last_test_failed")
        times = [(parse_time(record.get(key)), key) for key in keys]
        dated = [(moment, key) for moment, key in times if moment is not None]
        if dated:
            _, key = max(dated)
            ok = 1.0 if key.endswith("_ok") else 0.0
            samples.append(
                Sample("safehold_alert_last_delivery_ok", ok, {**base, "channel": channel})
            )
    return samples


def _repository_size(repo: Any) -> int | None:
    try:
        return int(sum(info.size for info in repo.backend.list("")))
    except Exception:  # a size is a nicety; an unlistable store is reported by `up`
        return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def render_text(samples: list[Sample]) -> str:
    """The Prometheus text format: HELP and TYPE once per metric, then its samples."""
    lines: list[str] = []
    for name in dict.fromkeys(sample.name for sample in samples):
        kind, text = _HELP.get(name, ("gauge", name))
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for sample in samples:
            if sample.name != name:
                continue
            labels = ",".join(f'{key}="{_escape(v)}"' for key, v in sample.labels.items())
            lines.append(f"{name}{{{labels}}} {_number(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""


def render_json(samples: list[Sample]) -> list[dict[str, Any]]:
    return [{"name": s.name, "labels": s.labels, "value": s.value} for s in samples]


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` atomically (the textfile collector must never read half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
