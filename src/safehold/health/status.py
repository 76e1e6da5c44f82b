"""`safehold status`: are you actually protected? One scorecard item per question.

It reads every destination once, through the same observation the watch and the metrics use
(app/watch.py: snapshots, newest drill record, reachability), plus the runbook file and the
schedule/alert state (app/ops_status.py). Every item says what was checked,
what was found, and — when it is not a PASS — the one thing to do."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.drills.runbook import plan_fingerprint, runbook_state
from safehold.drills.runner import format_duration_s
from safehold.errors import SafeholdError
from safehold.health.observe import (
    LOCKS_FIX,
    DestinationView,
    Observation,
    OpenRepo,
    lock_verdict,
    observe,
    rpo_of,
)
from safehold.health.scorecard import Level, ScoreItem
from safehold.pitr.stream import streamer_fix
from safehold.plan.logins import describe_login, login_identity
from safehold.plan.models import (
    BucketConfig,
    LocalDestination,
    Plan,
    PostgresConfig,
    SecretsConfig,
)
from safehold.policy.duration import format_duration
from safehold.repo.snapshot import is_full_backup, same_snapshot
from safehold.sources.bucket import BucketSource
from safehold.sources.from_plan import build_source
from safehold.sources.secrets import IDENTITY_ENV

MIN_RETENTION = timedelta(days=30)
SECRETS_TITLE = "secrets backed up, key kept apart, last drill decrypted them"
AGE_SECRET_KEY = b"AGE-SECRET-KEY-1"
_SCAN_SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}
_SCAN_DEPTH = 3
_SCAN_FILES = 5000  # a bounded look: status must stay fast on a big app folder
_SCAN_SIZE = 64 * 1024  # identity files are tiny


def _ago(now: datetime, then: datetime) -> str:
    return format_duration_s(max((now - then).total_seconds(), 0.0)) + " ago"


# ----- the items -----------------------------------------------------------------------------


def reachable_items(observation: Observation) -> list[ScoreItem]:
    items = []
    for view in observation.destinations:
        if view.reachable:
            continue
        name = view.destination.name
        items.append(
            ScoreItem(
                f"reachable:{name}",
                Level.FAIL,
                f"destination {name} can be read",
                view.error,
                "check its credentials and network; `safehold snapshots`",
            )
        )
    if observation.drill_error:
        items.append(
            ScoreItem(
                "drill:records",
                Level.FAIL,
                "the drill records can be read",
                observation.drill_error,
                "run `safehold check`; then `safehold drill` to record a new one",
            )
        )
    return items


def backup_items(plan: Plan, observation: Observation, now: datetime) -> list[ScoreItem]:
    items = []
    for source in plan.sources:
        rpo = rpo_of(plan, source.name)
        title = (
            f"newest good backup of {source.name} is younger than the RPO ({format_duration(rpo)})"
        )
        found = observation.newest_good(source.name)
        key = f"backup-fresh:{source.name}"
        if found is None:
            items.append(
                ScoreItem(
                    key, Level.FAIL, title, "no successful backup at all", "run `safehold backup`"
                )
            )
            continue
        newest = found[0].time.to_datetime()
        level = Level.PASS if now - newest <= rpo else Level.FAIL
        fix = (
            ""
            if level is Level.PASS
            else "run `safehold backup`, then schedule it: `safehold schedule install`"
        )
        items.append(ScoreItem(key, level, title, f"newest good backup {_ago(now, newest)}", fix))
    return items


def _password_identity(destination: LocalDestination) -> str:
    return destination.password_source()


def copies_items(plan: Plan, observation: Observation) -> list[ScoreItem]:
    items = []
    destinations = plan.destinations
    offsite = [d for d in destinations if d.type in ("s3", "sftp")]
    if len(destinations) < 2:
        items.append(
            ScoreItem(
                "copies:count",
                Level.FAIL,
                "at least two destinations",
                f"{len(destinations)} destination",
                "add an s3 or sftp [[destinations]] table and `safehold copy`",
            )
        )
    else:
        items.append(
            ScoreItem(
                "copies:count",
                Level.PASS,
                "at least two destinations",
                f"{len(destinations)} destinations",
            )
        )
    primary = destinations[0]
    other_credentials = [d for d in offsite if _password_identity(d) != _password_identity(primary)]
    if not offsite:
        items.append(
            ScoreItem(
                "copies:offsite",
                Level.FAIL,
                "one copy offsite (s3 or sftp)",
                "every destination is a local folder",
                "add an s3 or sftp destination on another provider",
            )
        )
    elif not other_credentials:
        items.append(
            ScoreItem(
                "copies:offsite",
                Level.WARN,
                "one copy offsite under other credentials",
                f"offsite {offsite[0].name} uses the same password source as {primary.name}",
                "give the offsite its own password_env/password_file",
            )
        )
    else:
        items.append(
            ScoreItem(
                "copies:offsite",
                Level.PASS,
                "one copy offsite under other credentials",
                f"{other_credentials[0].name} ({other_credentials[0].type})",
            )
        )
    plan_sources = [source.name for source in observation.plan.sources]
    items.extend(_copies_current(observation.destinations, plan_sources))
    items.append(_immutability(offsite))
    return items


def _copies_current(views: list[DestinationView], plan_sources: list[str]) -> list[ScoreItem]:
    """Whether each other destination holds the newest full backup of the plan (evidence and
    single-source snapshots are not what a copy must keep up with)."""
    if len(views) < 2 or not views[0].reachable:
        return []
    complete = [s for s in views[0].snapshots if is_full_backup(s, plan_sources)]
    if not complete:
        return []
    newest = complete[-1]
    items = []
    for view in views[1:]:
        if not view.reachable:
            continue
        name = view.destination.name
        has = any(same_snapshot(s, newest) for s in view.snapshots)
        title = f"destination {name} holds the newest backup"
        if has:
            items.append(
                ScoreItem(
                    f"copies:current:{name}",
                    Level.PASS,
                    title,
                    f"has {newest.name or newest.short_id}",
                )
            )
        else:
            items.append(
                ScoreItem(
                    f"copies:current:{name}",
                    Level.WARN,
                    title,
                    f"lacks {newest.name or newest.short_id}",
                    f"run `safehold copy --to {name}` (or set copy_after_backup)",
                )
            )
    return items


def locks_items(observation: Observation) -> list[ScoreItem]:
    """`locks:<destination>`: the newest snapshot there is locked for the policy's days."""
    items = []
    for view in observation.destinations:
        verdict = lock_verdict(view)
        if verdict is None:
            continue
        ok, detail = verdict
        name = view.destination.name
        days = view.destination.object_lock_days or 0
        title = f"destination {name}: the newest backup stays locked for {days:g} days"
        if ok:
            items.append(ScoreItem(f"locks:{name}", Level.PASS, title, detail))
        else:
            items.append(ScoreItem(f"locks:{name}", Level.WARN, title, detail, LOCKS_FIX))
    return items


def _immutability(offsite: list[LocalDestination]) -> ScoreItem:
    title = "offsite backups cannot be deleted with the backup credentials (Object Lock)"
    locked = [d for d in offsite if d.type == "s3" and d.object_lock_days]
    if locked:
        d = locked[0]
        return ScoreItem(
            "copies:locked",
            Level.PASS,
            title,
            f"{d.name}: Object Lock {d.object_lock_mode}, {d.object_lock_days:g} days",
        )
    return ScoreItem(
        "copies:locked",
        Level.WARN,
        title,
        "no destination has Object Lock" if offsite else "no offsite destination",
        "use an S3 bucket with Object Lock and set object_lock_days (docs/offsite.md)",
    )


def offsite_login_item(plan: Plan, environ: Mapping[str, str] = os.environ) -> ScoreItem | None:
    """Every offsite destination signs in with a login of its own: not the one of the
    production destination (the first) nor of another destination, so that one stolen key
    cannot reach two copies. Two s3 destinations that both fall back to the process-wide
    AWS_* variables share one login. None when there is no offsite destination
    (copies:offsite says so)."""
    title = "each offsite copy signs in with its own login, not production's"
    offsite = [d for d in plan.destinations[1:] if d.type in ("s3", "sftp")]
    if not offsite:
        return None
    for destination in offsite:
        mine = login_identity(destination, environ)
        for other in plan.destinations[: plan.destinations.index(destination)]:
            if other.type != destination.type or login_identity(other, environ) != mine:
                continue
            return ScoreItem(
                "copies:offsite-login",
                Level.FAIL,
                title,
                f"{destination.name} signs in with the same login as {other.name}: "
                f"{describe_login(plan, destination, environ)}",
                _own_login_fix(destination),
            )
    logins = [f"{d.name}: {describe_login(plan, d, environ)}" for d in offsite]
    return ScoreItem("copies:offsite-login", Level.PASS, title, "; ".join(logins))


def _own_login_fix(destination: LocalDestination) -> str:
    if destination.type == "s3":
        return (
            f'give destination {destination.name} its own access_key_id = "${{OFFSITE_KEY_ID}}" '
            f'and secret_access_key = "${{OFFSITE_SECRET}}" (a key of another account, '
            "docs/offsite.md), or its own profile"
        )
    return (
        f'give destination {destination.name} its own identity = "PATH" (a key only the '
        "offsite account accepts)"
    )


def drill_items(plan: Plan, observation: Observation, now: datetime) -> list[ScoreItem]:
    last = observation.drill
    interval = plan.drill.interval
    title = f"the last drill passed and is younger than {format_duration(interval)}"
    if last is None:
        return [ScoreItem("drill:recent", Level.FAIL, title, "no drill was ever run",
                          "run `safehold drill`")]  # fmt: skip
    items = []
    if not last.passed:
        reason = last.reasons[0] if last.reasons else "failed"
        items.append(
            ScoreItem(
                "drill:recent",
                Level.FAIL,
                title,
                f"the last drill ({_ago(now, last.started)}) FAILED: {reason}",
                "fix the cause, then `safehold drill`",
            )
        )
    elif now - last.started > interval:
        items.append(
            ScoreItem(
                "drill:recent",
                Level.FAIL,
                title,
                f"the last drill passed {_ago(now, last.started)}",
                "run `safehold drill` (and schedule it monthly)",
            )
        )
    else:
        items.append(
            ScoreItem("drill:recent", Level.PASS, title, f"passed {_ago(now, last.started)}")
        )
    rto = plan.targets.rto.total_seconds()
    rto_title = f"measured time to restore is within the RTO ({format_duration(plan.targets.rto)})"
    measured = f"measured {format_duration_s(last.rto_measured_s)} in the last drill"
    if last.rto_measured_s <= rto:
        items.append(ScoreItem("drill:rto", Level.PASS, rto_title, measured))
    else:
        items.append(
            ScoreItem(
                "drill:rto",
                Level.FAIL,
                rto_title,
                measured,
                "speed up the restore or agree on a longer RTO in [targets]",
            )
        )
    return items


def pitr_items(plan: Plan, observation: Observation) -> list[ScoreItem]:
    """Point-in-time recovery per PostgreSQL source: the window and the archive lag (`pitr =
    "wal"`), or, for a managed database, the honest word that PITR is the provider's."""
    items: list[ScoreItem] = []
    for source in plan.sources:
        if not isinstance(source, PostgresConfig) or source.pitr is None:
            continue
        key = f"pitr:{source.name}"
        rpo = source.rpo or plan.targets.rpo
        title = (
            f"point-in-time recovery of {source.name}: a window, lag within {format_duration(rpo)}"
        )
        provider = source.provider_pitr_window
        if provider is not None:
            items.append(ScoreItem(
                key, Level.WARN, f"point-in-time recovery of {source.name} is the provider's",
                f"the provider's PITR window ({format_duration(provider)}): not verified by "
                "safehold, which cannot read this server's WAL",
                "restore to a time in the provider's console once (the runbook lists the "
                "steps); safehold's dumps stay the portable copy",
            ))  # fmt: skip
            continue
        health = observation.pitr.get(source.name)
        if health is None or health.error:
            detail = health.error if health else "no reachable destination to read the WAL from"
            items.append(ScoreItem(key, Level.FAIL, title, detail,
                                   f"safehold wal status --source {source.name}"))  # fmt: skip
            continue
        window = health.window
        lag = "nothing archived" if health.lag_s is None else (
            f"lag {format_duration_s(health.lag_s)}"
        )  # fmt: skip
        if window is None:
            detail = f"no recoverable window yet ({lag})"
            fix = f"safehold pitr setup --source {source.name}, then safehold pitr basebackup"
            items.append(ScoreItem(key, Level.FAIL, title, detail, fix))
            continue
        span = f"window {_stamp(window[0])} .. {_stamp(window[1])}, {lag}"
        if health.problems:
            items.append(ScoreItem(key, Level.FAIL, title, f"{span}; {health.problems[0]}",
                                   f"safehold pitr basebackup --source {source.name} (a new "
                                   "start after the gap)"))  # fmt: skip
        elif health.slot is not None and health.slot.problem():
            items.append(ScoreItem(key, Level.FAIL if health.slot.lost else Level.WARN, title,
                                   f"{span}; {health.slot.problem()}",
                                   streamer_fix(source.name)))  # fmt: skip
        elif health.lag_s is not None and health.lag_s > rpo.total_seconds():
            items.append(ScoreItem(key, Level.FAIL, title, span,
                                   "archiving lags: check archive_command in PostgreSQL's log "
                                   "and `safehold wal status`"))  # fmt: skip
        else:
            items.append(ScoreItem(key, Level.PASS, title, span))
    return items


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def runbook_item(plan: Plan, observation: Observation, runbook: Path) -> ScoreItem:
    title = "the runbook is up to date with the plan and the last drill"
    state = runbook_state(runbook)
    fix = "run `safehold runbook`"
    if state is None:
        return ScoreItem("runbook", Level.WARN, title, f"no runbook at {runbook}", fix)
    plan_hash, drill_id = state
    if plan_hash != plan_fingerprint(plan):
        return ScoreItem("runbook", Level.WARN, title, "the plan changed since it was written", fix)
    if observation.drill is not None and observation.drill.record_id != drill_id:
        return ScoreItem(
            "runbook", Level.WARN, title, "a newer drill ran since it was written", fix
        )
    return ScoreItem("runbook", Level.PASS, title, f"{runbook.name} matches")


def key_item(plan: Plan) -> ScoreItem:
    title = "the repository password is not stored next to the backups"
    for destination in plan.destinations:
        if destination.password_file is None or destination.repository is None:
            continue
        key = Path(os.path.abspath(destination.password_file))
        repo = Path(os.path.abspath(destination.repository))
        if repo in key.parents or key.parent == repo.parent:
            return ScoreItem(
                "key-apart",
                Level.FAIL,
                title,
                f"{destination.name}: password file {key} sits next to {repo}",
                "keep the password in a password manager (password_command), "
                "away from the backup disk",
            )
    sources = sorted({d.password_source() for d in plan.destinations})
    return ScoreItem("key-apart", Level.PASS, title, "password from " + "; ".join(sources))


def secrets_items(
    plan: Plan, observation: Observation, now: datetime, environ: Mapping[str, str] = os.environ
) -> list[ScoreItem]:
    """Secrets backed up within the RPO, their age identity not stored with the plan or the
    backups, and proven to decrypt by the last drill. Without a secrets source: a WARN when
    a `.env` sits next to the plan (the app's secrets are not backed up)."""
    sources = [s for s in plan.sources if isinstance(s, SecretsConfig)]
    if not sources:
        if not (plan.base_dir / ".env").exists():
            return []
        return [ScoreItem(
            "secrets", Level.WARN, SECRETS_TITLE,
            f"no secrets source, but {plan.base_dir / '.env'} exists",
            'add a [[sources]] table with type = "secrets", files = [".env"] and your age '
            "public key in recipients (README: the secrets source)",
        )]  # fmt: skip
    return [_secrets_item(plan, source, observation, now, environ) for source in sources]


def _secrets_item(
    plan: Plan, source: SecretsConfig, observation: Observation, now: datetime,
    environ: Mapping[str, str],
) -> ScoreItem:  # fmt: skip
    key = f"secrets:{source.name}"
    rpo = rpo_of(plan, source.name)
    found = observation.newest_good(source.name)
    if found is None or now - found[0].time.to_datetime() > rpo:
        detail = "no successful backup" if found is None else (
            f"newest good backup {_ago(now, found[0].time.to_datetime())}, older than the RPO "
            f"({format_duration(rpo)})"
        )  # fmt: skip
        return ScoreItem(
            key,
            Level.FAIL,
            SECRETS_TITLE,
            f"{source.name}: {detail}",
            "run `safehold backup` (a missing secret file fails only this source)",
        )
    kept_with = identity_next_to_data(plan, environ)
    if kept_with is not None:
        return ScoreItem(
            key,
            Level.FAIL,
            SECRETS_TITLE,
            f"an age identity sits at {kept_with}, next to the plan or the backups",
            "move the key into the password manager and give it with "
            "identity_command (e.g. `pass show safehold/age`); delete the file",
        )
    drill = observation.drill
    decrypted = drill is not None and any(
        c.kind == "secrets" and c.ok and not c.warning and c.name.startswith(
            f"secrets of {source.name} ")
        for c in drill.checks
    )  # fmt: skip
    if drill is None or not decrypted:
        return ScoreItem(key, Level.WARN, SECRETS_TITLE,
                         f"{source.name}: backed up, but no drill has decrypted them yet"
                         if drill is None else
                         f"{source.name}: backed up, but the last drill did not decrypt them",
                         "run `safehold drill --identity FILE` (or set identity_command), "
                         "with the key from the password manager")  # fmt: skip
    return ScoreItem(key, Level.PASS, SECRETS_TITLE,
                     f"{source.name}: backed up {_ago(now, found[0].time.to_datetime())}, "
                     f"the last drill decrypted them ({_ago(now, drill.started)})")  # fmt: skip


def identity_next_to_data(plan: Plan, environ: Mapping[str, str] = os.environ) -> Path | None:
    """An age identity file (a file holding AGE-SECRET-KEY-1…) inside the plan folder or a
    local repository folder, or SAFEHOLD_AGE_IDENTITY_FILE pointing there; None if none is
    found. The look is bounded (depth, count, size); file contents never leave it."""
    folders = [Path(os.path.abspath(plan.base_dir))] + [
        Path(os.path.abspath(d.repository)) for d in plan.destinations if d.repository is not None
    ]
    named = environ.get(IDENTITY_ENV)
    if named:
        path = Path(os.path.abspath(named))
        if any(folder == path.parent or folder in path.parents for folder in folders):
            return path
    repositories = set(folders[1:])
    for path in _scan(folders[0], repositories):
        if _holds_identity(path):
            return path
    for folder in repositories:  # a repository's own files are packs: only its top level
        for path in _files_in(folder):
            if _holds_identity(path):
                return path
    return None


def _scan(root: Path, skip: set[Path]) -> Iterator[Path]:
    count = 0
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = [
            d for d in dirs
            if d not in _SCAN_SKIP and depth < _SCAN_DEPTH and here / d not in skip
        ]  # fmt: skip
        for name in files:
            count += 1
            if count > _SCAN_FILES:
                return
            yield here / name


def _files_in(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def _holds_identity(path: Path) -> bool:
    try:
        if path.is_symlink() or path.stat().st_size > _SCAN_SIZE:
            return False
        with open(path, "rb") as handle:
            return AGE_SECRET_KEY in handle.read(_SCAN_SIZE)
    except OSError:
        return False


def retention_item(plan: Plan) -> ScoreItem:
    from safehold.policy.retention import DEFAULT_POLICY, RetentionPolicy

    title = f"retention keeps at least {MIN_RETENTION.days} days of history"
    try:
        policy = RetentionPolicy.from_mapping(plan.retention) if plan.retention else DEFAULT_POLICY
    except ValueError as err:
        return ScoreItem("retention", Level.FAIL, title, f"retention: {err}", "fix [retention]")
    spans = [
        timedelta(hours=policy.keep_hourly),
        timedelta(days=policy.keep_daily),
        timedelta(weeks=policy.keep_weekly),
        timedelta(days=30 * policy.keep_monthly),
        timedelta(days=365 * policy.keep_yearly),
        policy.keep_within or timedelta(0),
    ]
    covered = max(spans)
    if policy.keep_last and not any(spans):
        return ScoreItem(
            "retention",
            Level.WARN,
            title,
            f"keeps the last {policy.keep_last} snapshots, whatever their age",
            "add keep_daily/keep_weekly/keep_monthly to [retention]",
        )
    detail = f"covers about {covered.days} days"
    if covered >= MIN_RETENTION:
        return ScoreItem("retention", Level.PASS, title, detail)
    return ScoreItem(
        "retention",
        Level.FAIL,
        title,
        detail,
        "keep more: e.g. keep_weekly = 4 and keep_monthly = 3 in [retention]",
    )


def bucket_items(plan: Plan) -> list[ScoreItem]:
    """A bucket source without versioning loses an overwritten or deleted object for good
    between two backups; an unreachable bucket is a warning here (the backup fails on it)."""
    items = []
    for config in plan.sources:
        if not isinstance(config, BucketConfig):
            continue
        source = build_source(config, plan)
        assert isinstance(source, BucketSource)
        key = f"bucket-versioning:{config.name}"
        title = f"bucket of {config.name} keeps old versions"
        try:
            state = source.versioning()
        except SafeholdError as err:
            items.append(ScoreItem(key, Level.WARN, title, plan.redactor().redact(err.message),
                                   "check the source's url and credentials; `safehold backup "
                                   f"--source {config.name}`"))  # fmt: skip
            continue
        if state == "Enabled":
            items.append(ScoreItem(key, Level.PASS, title, "versioning enabled"))
            continue
        found = "versioning suspended" if state else "versioning never enabled"
        fix = (
            "enable versioning on the bucket (an overwrite or delete between two backups is "
            "then recoverable), with a lifecycle rule that expires noncurrent versions after "
            "e.g. 30 days"
        )
        items.append(ScoreItem(key, Level.WARN, title, found, fix))
    return items


def scorecard(
    plan: Plan, open_repo: OpenRepo, now: datetime, environ: Mapping[str, str] = os.environ
) -> list[ScoreItem]:
    from safehold.health import ops_status

    observation = observe(plan, now, open_repo)
    items: list[ScoreItem] = []
    items += ops_status.schedule_items(plan)
    items += reachable_items(observation)
    items += backup_items(plan, observation, now)
    items += bucket_items(plan)
    items += copies_items(plan, observation)
    items += locks_items(observation)
    login = offsite_login_item(plan, environ)
    if login is not None:
        items.append(login)
    items += drill_items(plan, observation, now)
    items += pitr_items(plan, observation)
    items.append(runbook_item(plan, observation, plan.base_dir / "RUNBOOK.md"))
    items.append(key_item(plan))
    items += secrets_items(plan, observation, now, environ)
    items.append(retention_item(plan))
    items.append(rollback_item(plan, observation))
    items += ops_status.alert_items(plan)
    return items


def rollback_item(plan: Plan, observation: Observation) -> ScoreItem:
    """The rollback plan: a command set, the last release with its pre-deploy snapshot, and
    the newest migrations reversible by a code rollback."""
    title = "rollback plan: command set, last release snapshotted, newest migrations reversible"
    key = "rollback-plan"
    if plan.release is None or not plan.release.rollback_command:
        fix = 'add [release] rollback_command = "git checkout {git_sha} && ./deploy"'
        return ScoreItem(key, Level.WARN, title, "no rollback command in the plan", fix)
    if observation.releases_error:
        return ScoreItem(key, Level.FAIL, title, observation.releases_error,
                         "run safehold check; the release ledger could not be read")  # fmt: skip
    if not observation.releases:
        return ScoreItem(key, Level.WARN, title, "no release in the ledger yet",
                         "make the deploy script run: safehold release start --id $REL --lint "
                         "migrations/ (and release finish after it)")  # fmt: skip
    last = observation.releases[-1]
    present = {s.id for view in observation.reachable for s in view.snapshots}
    if last.snapshot not in present:
        return ScoreItem(key, Level.FAIL, title,
                         f"the pre-deploy snapshot of release {last.id} is gone",
                         "take one now: safehold backup --reason predeploy")  # fmt: skip
    reversible, why = last.reversible()
    if reversible is False:
        return ScoreItem(key, Level.WARN, title,
                         f"release {last.id} is not reversible by code rollback: {why}",
                         "keep its snapshot held; safehold rollback --dry-run shows the data "
                         "path")  # fmt: skip
    detail = f"release {last.id} has snapshot {last.snapshot[:8]}; reversible: "
    detail += "unknown (not finished)" if reversible is None else why
    return ScoreItem(key, Level.PASS, title, detail)
