"""Commands about the repository itself: init, key, check, forget, prune, stats, unlock."""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from safehold.app.forget import (
    CopiesElsewhere,
    mark_only_copies,
    plan_named_forget,
    plan_policy_forget,
    remove_snapshots,
)
from safehold.app.inspect import human_bytes, repository_stats
from safehold.app.opener import (
    COPY_SOURCE,
    PasswordSource,
    RepositoryRequest,
    create_destination,
    destination_backend,
    destination_password_source,
    init_repository,
    kdf_from_environment,
    open_destination,
    resolve_password,
)
from safehold.cli.alerting import alerts_on_failure
from safehold.cli.context import CliState, pass_state, prompt_password
from safehold.cli.progress import step_progress
from safehold.errors import (
    ExitCode,
    PasswordSourceError,
    SafeholdError,
    UsageError,
)
from safehold.pitr.retention import forget_wal, plan_wal_expiry
from safehold.pitr.store import WalArchive
from safehold.redaction import register_secret
from safehold.repo.check import Checker
from safehold.repo.gotypes import format_time
from safehold.repo.objectlock import protect_kept_objects
from safehold.repo.prune import execute_prune, plan_prune, remove_interrupted_writes
from safehold.repo.repository import Repository

if TYPE_CHECKING:  # the plan package (pydantic) loads only when a plan is used
    from safehold.plan.models import LocalDestination, Plan
    from safehold.repo.snapshot import Snapshot


@click.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask: accept what was detected.")
@click.option("--app", help="The app's name for the plan (default: this folder's name).")
@click.option("--env", "env_name", default="prod", show_default=True, help="The environment.")
@click.option("--repository", "repository_path", default="backups/repository", show_default=True,
              help="The plan's first repository (relative to the plan's folder).")  # fmt: skip
@click.option("--copy-chunker-params-from", "chunker_from", metavar="LOCATION",
              help="With -r: use this repository's chunker parameters, so copies between the "
              "two deduplicate (its password: --from-password-file, --from-password-command "
              "or SAFEHOLD_FROM_PASSWORD*).")  # fmt: skip
@click.option("--from-password-file", help="Read the other repository's password from this file.")
@click.option("--from-password-command", help="Run this command to get the other's password.")
@pass_state
def init(
    state: CliState,
    yes: bool,
    app: str | None,
    env_name: str,
    repository_path: str,
    chunker_from: str | None,
    from_password_file: str | None,
    from_password_command: str | None,
) -> None:
    """Create a repository (-r PATH), or write a starter plan and create its repository.

    With a plan, every destination after the first is created with the first one's chunker
    parameters, so `safehold copy` between them deduplicates fully.
    """
    if state.explicit_repository():
        polynomial = None
        if chunker_from is not None:
            other = state.open_request(
                RepositoryRequest(chunker_from, from_password_file, from_password_command,
                                  COPY_SOURCE)
            )  # fmt: skip
            polynomial = other.config.chunker_polynomial
        repo = init_repository(
            state.repo_options, state.environ(), ask=state.ask_password(),
            chunker_polynomial=polynomial,
        )  # fmt: skip
        state.say(f"created repository {repo.config.id[:10]} at {repo.backend.location}")
        if chunker_from is not None:
            state.say(f"chunker parameters copied from {other.backend.location}")
        state.say(
            "keep the password safe and away from the backups: without it the data cannot be read"
        )
        return
    _init_plan(state, yes, app, env_name, repository_path, chunker_from)


def _init_plan(
    state: CliState,
    yes: bool,
    app: str | None,
    env_name: str,
    repository_path: str,
    chunker_from: str | None,
) -> None:
    from safehold.plan.starter import AGE_RECIPIENT_ENV, detect, render_starter_plan

    plan_file = Path(state.plan_path or os.environ.get("SAFEHOLD_PLAN") or "safehold.toml")
    if not plan_file.exists():
        cwd = plan_file.parent.resolve() if plan_file.parent != Path("") else Path.cwd()
        detected = detect(cwd, os.environ)
        recipient, identity = _age_key(os.environ) if detected.secret_files else (None, None)
        text = render_starter_plan(
            app or cwd.name, env_name, detected, repository_path, age_recipient=recipient
        )
        state.say(f"found: {_describe_detected(detected)}")
        if not yes and sys.stdin.isatty():
            click.confirm(f"write a starter plan to {plan_file}?", default=True, abort=True)
        plan_file.write_text(text)
        state.say(f"wrote {plan_file}: read it, adjust it, then run `safehold plan check`")
        if identity is not None:
            _show_identity_once(identity)
        elif recipient is not None:
            state.say(f"secret files are encrypted to {AGE_RECIPIENT_ENV}'s key {recipient}")
    else:
        state.say(f"using the existing plan {plan_file}")
    if chunker_from is not None:
        raise UsageError(
            "--copy-chunker-params-from goes with -r: with a plan, every destination already "
            "takes the first one's chunker parameters"
        )
    plan = state.plan()
    polynomial: int | None = None
    for number, destination in enumerate(plan.destinations):
        repo = _create_destination(state, destination, polynomial)
        if number == 0 and len(plan.destinations) > 1:
            polynomial = _first_polynomial(state, plan, repo)
    _warn_about_placement(state, plan.base_dir, plan.destinations)


def _first_polynomial(state: CliState, plan: Plan, created: Repository | None) -> int | None:
    """The first destination's chunker polynomial, which the others are created with; an
    existing first destination is opened for it (when it cannot be, the others draw their own,
    and copies to them re-chunk: said once)."""
    if created is not None:
        return created.config.chunker_polynomial
    try:
        return open_destination(
            plan, plan.destinations[0].name, state.environ()
        ).config.chunker_polynomial
    except SafeholdError as err:
        state.warn(
            f"could not open destination {plan.destinations[0].name} to copy its chunker "
            f"parameters ({err.message}): new destinations get their own, so copies to them "
            "will not deduplicate against the first"
        )
        return None


def _warn_about_placement(
    state: CliState, app_dir: Path, destinations: list[LocalDestination]
) -> None:
    """One warning when every repository shares the app's disk (none is offsite)."""
    from safehold.plan.starter import repository_warning

    if any(destination.repository is None for destination in destinations):
        return  # an s3 or sftp destination is the offsite copy
    warnings = [repository_warning(app_dir, Path(d.repository or "")) for d in destinations]
    if warnings and all(warnings):
        state.warn(str(warnings[0]))


def _create_destination(
    state: CliState, destination: LocalDestination, chunker_polynomial: int | None
) -> Repository | None:
    """Create one destination's repository unless it exists (then None); a missing password
    from the environment is generated and shown once (a file or command must work as
    configured)."""
    backend = destination_backend(destination)
    if backend.exists() and any(True for _ in backend.list("keys/")):
        state.say(f"repository {destination.location()} already exists; nothing to create")
        return None
    environ = state.environ()
    source = destination_password_source(destination, environ)
    try:
        password = resolve_password(source, environ)
        generated = False
    except PasswordSourceError:
        if source.kind != "variable":
            raise
        password = secrets.token_urlsafe(24).encode()
        generated = True
    repo = create_destination(destination, password, environ, chunker_polynomial=chunker_polynomial)
    state.say(
        f"created repository {repo.config.id[:10]} for destination {destination.name} at "
        f"{destination.location()}"
    )
    if generated:
        variable = source.value
        click.echo(
            f"\nA passphrase was generated for destination {destination.name}. It is shown "
            f"ONCE:\n\n    {password.decode()}\n\n"
            "Keep it in a password manager, away from the backups: without it nobody can "
            f"read them. Before the next command:  export {variable}='<the passphrase>'\n"
        )
    return repo


def _age_key(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The age public key a new secrets source is encrypted to, and the identity to show
    once. The rule: SAFEHOLD_AGE_RECIPIENT, when set, is the user's own key (the identity is
    already in their password manager) and nothing is generated; else a new identity is
    generated here, in memory only: init never writes it to disk or into the plan."""
    import pyrage

    from safehold.plan.starter import AGE_RECIPIENT_ENV

    given = environ.get(AGE_RECIPIENT_ENV, "").strip()
    if given:
        try:
            pyrage.x25519.Recipient.from_str(given)
        except pyrage.RecipientError:
            raise UsageError(
                f"{AGE_RECIPIENT_ENV} is not an age public key (age1…)",
                hint="set it to the public key of your age identity (age-keygen -y FILE "
                "prints it), or unset it and init generates one",
            ) from None
        return given, None
    identity = pyrage.x25519.Identity.generate()
    return str(identity.to_public()), str(identity)


def _show_identity_once(identity: str) -> None:
    """Like a generated repository password: printed once on stdout (also with --yes), then
    only registered for redaction."""
    from safehold.sources.secrets import IDENTITY_ENV

    click.echo(
        "\nAn age identity was generated for the secrets source. It is shown ONCE and written "
        f"nowhere:\n\n    {identity}\n\n"
        "Keep it in a password manager, apart from the backups: without it nobody can decrypt "
        "the secrets (the plan holds only its public key). To restore or drill, save it to a "
        "file outside the app folder and give --identity FILE, or set "
        f"{IDENTITY_ENV}=FILE, or add identity_command (e.g. `pass show safehold/age`) to the "
        "secrets source.\n"
    )
    register_secret(identity)


def _describe_detected(detected: object) -> str:
    from safehold.plan.starter import Detected

    assert isinstance(detected, Detected)
    parts = [f"{db.type} database in ${{{db.variable}}}" for db in detected.databases]
    parts += [f"folder {name}/" for name in detected.folders]
    parts += [f"SQLite file {path}" for path in detected.sqlite_files]
    parts += [f"S3 bucket in ${{{bucket.variable}}}" for bucket in detected.buckets]
    parts += [f"secret file {path} (age-encrypted)" for path in detected.secret_files]
    return ", ".join(parts) or "nothing to detect (the plan has placeholders to fill in)"


def _new_password(new_password_file: str | None) -> bytes:
    if new_password_file:
        source = PasswordSource("file", new_password_file, "--new-password-file")
    else:
        source = PasswordSource("prompt", "enter new password: ", "a prompt")
    return resolve_password(source, {}, ask=prompt_password, confirm=True)


@click.group()
def key() -> None:
    """Manage the keys (passwords) that open the repository."""


@key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def key_list(state: CliState, as_json: bool) -> None:
    """List keys; the one you opened with is marked *."""
    repo = state.open()
    keys = repo.list_keys()
    if as_json:
        state.emit_json(
            [
                {
                    "id": k.id,
                    "current": k.current,
                    "username": k.username,
                    "hostname": k.hostname,
                    "created": format_time(k.created) if k.created else None,
                    **({"problem": k.problem} if k.problem else {}),
                }
                for k in keys
            ]
        )
        return
    for k in keys:
        mark = "*" if k.current else " "
        created = format_time(k.created)[:19] if k.created else "-"
        if k.problem:
            state.say(f"{mark}{k.id[:8]}  {k.problem}")
            continue
        state.say(f"{mark}{k.id[:8]}  {k.username}@{k.hostname}  {created}")


@key.command("add")
@click.option("--new-password-file", help="Read the new key's password from this file.")
@pass_state
def key_add(state: CliState, new_password_file: str | None) -> None:
    """Add a key: another password that opens the same repository."""
    repo = state.open()
    key_id = repo.add_key(_new_password(new_password_file), kdf_from_environment(state.environ()))
    state.say(f"added key {key_id[:8]}")


@key.command("remove")
@click.argument("key_id")
@pass_state
def key_remove(state: CliState, key_id: str) -> None:
    """Remove a key (never the one in use, never the last one)."""
    repo = state.open()
    with repo.locked(exclusive=True):
        full_id = repo.resolve_key(key_id)
        repo.remove_key(full_id)
    state.say(f"removed key {full_id[:8]}")


@key.command("passwd")
@click.option("--new-password-file", help="Read the new password from this file.")
@pass_state
def key_passwd(state: CliState, new_password_file: str | None) -> None:
    """Change the password of the key in use."""
    repo = state.open()
    with repo.locked(exclusive=True):
        new_id = repo.change_password(
            _new_password(new_password_file), kdf_from_environment(state.environ())
        )
    state.say(f"password changed (key {new_id[:8]})")


@click.command()
@click.option("--remove-all", is_flag=True, help="Remove every lock, not only stale ones.")
@pass_state
def unlock(state: CliState, remove_all: bool) -> None:
    """Remove stale locks (left by killed processes)."""
    repo = state.open()
    wanted = len(repo.stale_lock_ids(remove_all))
    removed = repo.remove_stale_locks(remove_all)
    state.say(f"removed {removed} lock(s)")
    if removed < wanted:
        state.warn(
            f"{wanted - removed} lock(s) could not be deleted with these credentials (a "
            "write-only login?): they expire on their own, or run unlock with the maintenance "
            "credentials"
        )


@click.command()
@click.option("--read-data", is_flag=True, help="Also read and verify every stored byte.")
@click.option("--subset", help="With --read-data: only N% of packs, or group n/t.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def check(state: CliState, read_data: bool, subset: str | None, as_json: bool) -> int:
    """Verify the repository: structure, and with --read-data every blob."""
    if subset and not read_data:
        raise UsageError("--subset needs --read-data")
    repo = state.open()
    with repo.locked(exclusive=False), step_progress(state) as progress:
        try:
            report = Checker(repo, progress).run(read_data, subset)
        except ValueError as err:
            raise UsageError(f"invalid --subset: {err}", hint="use e.g. 10% or 1/5") from None
    if as_json:
        state.emit_json(
            {
                "ok": report.ok,
                "errors": report.errors,
                "warnings": report.warnings,
                "snapshots_checked": report.snapshots_checked,
                "packs_checked": report.packs_checked,
                "packs_read": report.packs_read,
                "bytes_read": report.bytes_read,
                "affected_snapshots": report.affected_snapshots,
                "records_checked": report.records_checked,
                "stale_locks": report.stale_locks,
            }
        )
    else:
        for warning in report.warnings:
            state.warn(warning)
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
        read = f", read {report.packs_read} packs ({human_bytes(report.bytes_read)})"
        state.say(
            f"checked {report.snapshots_checked} snapshots, {report.packs_checked} packs"
            + (read if read_data else "")
            + f", {report.records_checked} safehold records"
        )
        state.say("no errors were found" if report.ok else f"{len(report.errors)} error(s) found")
    return ExitCode.OK if report.ok else ExitCode.ERROR


@click.command()
@click.argument("snapshots", nargs=-1)
@click.option("--keep-last", type=int, help="Keep the last N snapshots.")
@click.option("--keep-hourly", type=int, help="Keep the newest snapshot of each of N hours.")
@click.option("--keep-daily", type=int, help="Keep the newest snapshot of each of N days.")
@click.option("--keep-weekly", type=int, help="Keep the newest snapshot of each of N weeks.")
@click.option("--keep-monthly", type=int, help="Keep the newest snapshot of each of N months.")
@click.option("--keep-yearly", type=int, help="Keep the newest snapshot of each of N years.")
@click.option("--keep-within", help="Keep everything within this duration of the newest.")
@click.option("--keep-reason", "keep_reasons", multiple=True,
              help="REASON=N: keep the last N snapshots of that reason (repeatable).")  # fmt: skip
@click.option("--dry-run", "-n", is_flag=True, help="Show KEEP/REMOVE and why; change nothing.")
@click.option("--force", is_flag=True, help="Also remove snapshots that exist nowhere else.")
@click.option("--prune", "then_prune", is_flag=True, help="Run prune afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@pass_state
@alerts_on_failure("prune")
def forget(
    state: CliState,
    snapshots: tuple[str, ...],
    keep_last: int | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    keep_within: str | None,
    keep_reasons: tuple[str, ...],
    dry_run: bool,
    force: bool,
    then_prune: bool,
    as_json: bool,
) -> None:
    """Remove snapshots: named ones, or those a retention policy does not keep.

    Without SNAPSHOT, the policy comes from the --keep-* options, else the plan's [retention]
    table, else the default (7 daily, 4 weekly, 3 monthly, last 5 predeploy). Data stays until
    `prune`. A snapshot that exists in no other repository is removed only with --force.
    """
    table = _policy_table(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                          keep_yearly, keep_within, keep_reasons)  # fmt: skip
    if snapshots and table:
        raise UsageError("name snapshots or give --keep-* rules, not both")
    repo = state.open()
    with repo.locked(exclusive=not dry_run):
        if snapshots:
            plan = plan_named_forget(repo, snapshots)
        else:
            plan = plan_policy_forget(repo, _policy(state, table), _scope(state))
        mark_only_copies(plan, _copies_elsewhere(state))
        wal = plan_wal_expiry(WalArchive.load(repo), plan.kept)  # WAL no kept base backup needs
        if as_json:
            state.emit_json({"dry_run": dry_run, "decisions": plan.decisions,
                             "only_here": [s.id for s in plan.only_here],
                             "wal": wal.to_json()})  # fmt: skip
        else:
            for line in plan.lines:
                state.say(line)
        say = (lambda _message: None) if as_json else state.say  # --json: stdout is JSON only
        if wal.forget:
            say(f"WAL archive: {wal.files_forgotten} file(s) in {len(wal.forget)} batch(es) "
                f"are older than what the kept base backups need ({wal.oldest_needed} on): "
                + ("would be forgotten" if dry_run else "forgotten"))  # fmt: skip
        if dry_run:
            say(f"dry run: {plan.count} snapshot(s) would be removed; nothing changed")
            return
        if plan.only_here and not force:
            raise UsageError(
                f"{len(plan.only_here)} snapshot(s) to remove exist in no other repository "
                f"(e.g. {plan.only_here[0].short_id})",
                hint="copy them elsewhere first, or add --force to remove them anyway",
            )
        retained = remove_snapshots(repo, plan)
        wal_retained = forget_wal(repo, wal)
        for message in retained + wal_retained:
            say(f"kept (under retention): {message}")
        say(f"removed {plan.count - len(retained)} snapshot(s); "
            "run `safehold prune` to free the space")  # fmt: skip
        if then_prune:
            _prune(state, repo, dry_run=False)


def _policy_table(
    keep_last: int | None, keep_hourly: int | None, keep_daily: int | None,
    keep_weekly: int | None, keep_monthly: int | None, keep_yearly: int | None,
    keep_within: str | None, keep_reasons: tuple[str, ...],
) -> dict[str, object]:  # fmt: skip
    table: dict[str, object] = {}
    for key, value in (("keep_last", keep_last), ("keep_hourly", keep_hourly),
                       ("keep_daily", keep_daily), ("keep_weekly", keep_weekly),
                       ("keep_monthly", keep_monthly), ("keep_yearly", keep_yearly),
                       ("keep_within", keep_within)):  # fmt: skip
        if value is not None:
            table[key] = value
    reasons: dict[str, int] = {}
    for entry in keep_reasons:
        reason, _, count = entry.partition("=")
        if not count.strip().lstrip("-").isdigit():
            raise UsageError(f"--keep-reason {entry!r}: expected REASON=N, e.g. predeploy=5")
        reasons[reason.strip()] = int(count)
    if reasons:
        table["keep_reason"] = reasons
    return table


def _policy(state: CliState, table: dict[str, object]) -> Any:
    from safehold.policy.retention import DEFAULT_POLICY, RetentionPolicy

    if not table and state.has_plan():
        table = dict(state.plan().retention)
    if not table:
        return DEFAULT_POLICY
    try:
        return RetentionPolicy.from_mapping(table)
    except ValueError as err:
        raise UsageError(f"retention: {err}", hint="see `safehold forget --help`") from None


def _scope(state: CliState) -> Any:
    """The plan's app, env and sources, so retention counts only full backups of it."""
    from safehold.policy.retention import PlanScope

    if not state.has_plan():
        return None
    plan = state.plan()
    return PlanScope(plan.app, plan.env, frozenset(source.name for source in plan.sources))


def _copies_elsewhere(state: CliState) -> CopiesElsewhere | None:
    """With a plan: asks the plan's other destinations which snapshots they also hold. A
    repository named with -r/SAFEHOLD_REPOSITORY is used as restic would, without that
    safeguard."""
    if state.explicit_repository() or not state.has_plan():
        return None
    from safehold.app.destinations import copy_holders

    plan = state.plan()

    def elsewhere(doomed: list[Snapshot]) -> set[str]:
        holders, _ = copy_holders(plan, doomed, os.environ)
        return {snapshot_id for snapshot_id, names in holders.items() if names}

    return elsewhere


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be deleted; change nothing.")
@pass_state
@alerts_on_failure("prune")
def prune(state: CliState, dry_run: bool) -> None:
    """Delete data no snapshot references; repack mostly-unused packs."""
    repo = state.open()
    with repo.locked(exclusive=True):
        _prune(state, repo, dry_run)


def _prune(state: CliState, repo: object, dry_run: bool) -> None:
    from safehold.repo.repository import Repository

    assert isinstance(repo, Repository)
    plan = plan_prune(repo)
    if plan.missing_blobs:
        raise UsageError(
            f"{plan.missing_blobs} blobs used by snapshots are missing from the index",
            hint="run `safehold check` first; prune refuses to run on a damaged repository",
        )
    state.say(
        f"used blobs: {plan.used_blobs}, unused: {plan.unused_blobs}, "
        f"duplicates: {plan.duplicate_blobs}"
    )
    state.say(
        f"packs to delete: {len(plan.delete_packs)}, to repack: {len(plan.repack_packs)}, "
        f"unreferenced (from interrupted backups): {len(plan.orphan_packs)}, "
        f"kept: {len(plan.keep_packs)}"
    )
    state.say(f"space to free: {human_bytes(plan.bytes_freed)}")
    if dry_run:
        state.say("dry run: nothing was changed")
        return
    leftovers = remove_interrupted_writes(repo)
    if leftovers:
        state.say(f"removed {leftovers} half-written file(s) left by interrupted writes")
    if not plan.has_work:
        state.say("nothing to prune")
        locks = protect_kept_objects(repo)  # a scheduled prune keeps the locks fresh too
        if locks:
            state.say(locks.summary())
        return
    with step_progress(state) as progress:
        execute_prune(repo, plan, progress)
    for message in plan.retained[:20]:
        state.say(f"kept (under retention): {message}")
    if plan.retained:
        state.say(f"{len(plan.retained)} object(s) stay until their retention ends; "
                  "prune again after that date")  # fmt: skip
    if plan.locks:
        state.say(plan.locks.summary())
    state.say("prune done")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def stats(state: CliState, as_json: bool) -> None:
    """Sizes: snapshots, packs, stored and original bytes, compression."""
    repo = state.open()
    with repo.locked(exclusive=False):
        result = repository_stats(repo)
    if as_json:
        value = dict(result.__dict__)
        value["compression_ratio"] = round(result.compression_ratio, 3)
        state.emit_json(value)
        return
    state.say(f"snapshots:              {result.snapshots}")
    state.say(f"latest snapshot:        {result.files_latest} files, "
              f"{human_bytes(result.restore_size_latest)}")  # fmt: skip
    state.say(f"packs:                  {result.packs} ({human_bytes(result.pack_bytes)})")
    state.say(f"unique data, original:  {human_bytes(result.uncompressed_bytes)}")
    state.say(f"unique data, stored:    {human_bytes(result.stored_blob_bytes)}")
    state.say(f"compression ratio:      {result.compression_ratio:.2f}x")
    state.say(f"keys:                   {result.keys}")


@click.group()
def repair() -> None:
    """Repair derived data of a damaged repository (as `restic repair`)."""


@repair.command("index")
@click.option(
    "--read-all-packs",
    is_flag=True,
    help="Read every pack's header, also of packs an intact index describes.",
)
@click.option("--dry-run", "-n", is_flag=True, help="Show what the new index holds; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def repair_index_command(state: CliState, read_all_packs: bool, dry_run: bool,
                         as_json: bool) -> None:  # fmt: skip
    """Rebuild the index from the pack headers, replacing every old index file.

    Run it when a command stops on a damaged index file. Intact index files are reused
    (unless --read-all-packs); the headers of the other packs are read. Data is never touched.
    """
    from safehold.repo.repair import repair_index

    repo = state.open()
    with repo.locked(exclusive=not dry_run), step_progress(state) as progress:
        report = repair_index(repo, read_all_packs=read_all_packs, dry_run=dry_run,
                              progress=progress)  # fmt: skip
    if as_json:
        state.emit_json(dataclasses.asdict(report))
        return
    for damaged in report.damaged_index_files:
        state.warn(f"damaged index file (replaced): {damaged}")
    for unreadable in report.unreadable_packs:
        state.warn(f"pack left out, its header cannot be read: {unreadable}")
    if report.missing_packs:
        state.warn(f"{report.missing_packs} pack(s) in the old index are gone from the storage")
    state.say(
        f"{report.packs} packs ({report.blobs} blobs) indexed; {report.packs_read} pack "
        f"header(s) read, {report.index_files_read} intact index file(s) reused"
    )
    if dry_run:
        old = report.index_files_read + len(report.damaged_index_files)
        state.say(f"dry run: would replace {old} index file(s); nothing changed")
        return
    state.say(
        f"wrote {len(report.written)} index file(s), removed {len(report.removed)} old one(s)"
    )
    if report.unreadable_packs:
        state.say(
            "run `safehold check --read-data` to see which snapshots the left-out packs affect"
        )


COMMANDS = [init, key, unlock, check, forget, prune, stats, repair]
