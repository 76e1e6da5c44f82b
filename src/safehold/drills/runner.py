"""`safehold drill`: restore a snapshot into a scratch environment, check it, time it.

Phases, each timed: `fetch` (open the repository, read the index, pick the snapshot),
`scratch` (start throwaway servers / make temp folders), `restore:<source>` for each source,
`checks`, then `teardown`. The measured time-to-restore (RTO) is everything up to the end of
the checks: in a real disaster you also need somewhere to restore to, and proof it works.

Restores go through `app.restore.plan_restore` and `execute_restore`, the same code path and
the same production guard as `safehold restore --source NAME --into TARGET`, and each source
result carries that command, so the runbook prints only commands the drill has executed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.app.opener import open_destination
from safehold.app.restore import execute_restore, plan_restore
from safehold.drills.checks import ScratchEnvironment, run_check
from safehold.drills.record import CheckResult, DrillRecord, Phase, SourceResult, save_drill
from safehold.errors import SafeholdError, UsageError
from safehold.fs.verify import TreeComparison, compare_restored_tree
from safehold.pitr.drill import drill_pitr
from safehold.plan.models import (
    AnySource,
    BucketConfig,
    CommandConfig,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SecretsConfig,
    SQLiteConfig,
)
from safehold.redaction import redact, redact_url
from safehold.repo.progress import Progress, ProgressCallback
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot, is_full_backup
from safehold.runtime import lower_thread_priority
from safehold.sources.base import RestoreReport
from safehold.sources.dbquery import CheckQueryError, Database, newest_records
from safehold.sources.files import folder_names
from safehold.sources.from_plan import build_source
from safehold.sources.postgres import PostgresSource
from safehold.sources.scratch import (
    NamedScratchServer,
    ScratchDatabases,
    ScratchError,
    ScratchRoot,
    ThrowawayMariadb,
    ThrowawayPostgres,
)
from safehold.sources.secrets import ENV_FILE, SecretsSource, parse_dotenv

Observer = Callable[[str], None]


@dataclass
class DrillRequest:
    snapshot: str = "latest"
    destination: str = ""  # label recorded in the drill record
    scratch_parent: str | None = None  # where the scratch folder goes (default: TMPDIR)
    identity: str | None = None  # an age identity file: decrypt secrets sources


def drill_plan(
    plan: Plan,
    request: DrillRequest,
    environ: Mapping[str, str] = os.environ,
    *,
    observe: Observer = lambda _message: None,
    save: bool = True,
    progress: ProgressCallback | None = None,
) -> DrillRecord:
    """Drill `plan` from the destination `request.destination` (default: the first) and, with
    `save`, store the record in that repository: what `safehold drill` does. Never raises for
    a failed drill: the record says what failed (`record.passed`, `record.reasons`)."""
    destination = plan.destination(request.destination or None)
    opened: list[Repository] = []

    def open_repository() -> Repository:
        repo = open_destination(plan, destination.name, environ)
        opened.append(repo)
        return repo

    request = dataclasses.replace(request, destination=destination.name)
    record = DrillRun(
        plan, open_repository, request, observe=observe, environ=environ, progress=progress
    ).run()
    if save and opened:
        save_drill(opened[0], record)
    return record


def _utc(snapshot: Snapshot) -> datetime:
    return snapshot.time.to_datetime().astimezone(UTC)


def env_name(source: str) -> str:
    return "SAFEHOLD_" + "".join(c if c.isalnum() else "_" for c in source.upper())


def pick_snapshot(repo: Repository, plan: Plan, ref: str) -> tuple[Snapshot, bool]:
    """The snapshot to drill, and whether it is the newest full backup of the plan. `latest`:
    the newest full backup of this plan (`is_full_backup`: every plan source present and good,
    not evidence); evidence, partial and single-source snapshots are never drilled as latest."""
    snapshots = repo.list_snapshots()
    sources = [source.name for source in plan.sources]
    full = [
        s for s in snapshots
        if s.safehold.get("app") == plan.app and s.safehold.get("env") == plan.env
        and is_full_backup(s, sources)
    ]  # fmt: skip
    full.sort(key=lambda s: s.time.ns)
    if ref == "latest":
        if not full:
            raise UsageError(
                f"no complete backup of {plan.name_prefix} to drill",
                hint="run `safehold backup` first (a backup with a failed or missing source "
                "is incomplete)",
            )
        return full[-1], True
    chosen = repo.find_snapshot(ref, snapshots)
    return chosen, bool(full) and chosen.id == full[-1].id


class DrillRun:
    """One drill. `run()` returns the record; teardown always happens, also on Ctrl-C."""

    def __init__(
        self,
        plan: Plan,
        open_repository: Callable[[], Repository],
        request: DrillRequest,
        observe: Observer = lambda _message: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        environ: Mapping[str, str] = os.environ,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.plan = plan
        self.progress = progress  # phases as they start; each source's restore in bytes
        self.environ = environ
        self.open_repository = open_repository
        self.request = request
        self.observe = observe
        self.now = now
        self.phases: list[Phase] = []
        self.sources: list[SourceResult] = []
        self.checks: list[CheckResult] = []
        self.reasons: list[str] = []
        self.scratch: ScratchEnvironment | None = None
        self.newest_record_age_s: float | None = None  # set by the freshness check
        self.secrets: dict[str, RestoreReport] = {}  # secrets sources: what was proven
        self.secret_values: list[str] = []  # decrypted variables: kept out of every detail
        self.account_checks: dict[str, list[str]] = {}  # source -> what did not come along
        self.pitr: list[dict[str, Any]] = []  # point-in-time recoveries (pitr/drill.py)
        self._starts: dict[str, Future[tuple[ScratchDatabases, float]]] = {}
        self._compared: dict[str, TreeComparison] = {}  # files compared during the restores
        self._reads = contextlib.ExitStack()  # the observer of the restores on threads
        self._cancel = threading.Event()  # teardown began: restores on threads stop reading
        self._threads: list[threading.Thread] = []  # the drill's own threads, joined at teardown

    # ----- the phases ---------------------------------------------------------------------

    def _step(self, phase: str, source: str = "") -> None:
        if self.progress is not None:
            self.progress(Progress(phase, 0, source=source))

    def run(self) -> DrillRecord:
        started = self.now()
        clock_start = begin = time.monotonic()
        root = ScratchRoot(self.request.scratch_parent)
        pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="safehold-drill")
        try:
            self._start_servers(root, pool)  # they start while the repository opens
            self._step("fetch")
            repo = self.open_repository()
            snapshot, newest = pick_snapshot(repo, self.plan, self.request.snapshot)
            _ = repo.index  # reading the index is part of getting ready to restore
            self._phase(
                "fetch", begin, detail=f"snapshot {snapshot.short_id} {snapshot.name or ''}"
            )
            self.observe(f"drilling snapshot {snapshot.short_id} ({snapshot.name or 'unnamed'})")
            self._prepare_and_restore(repo, snapshot, root, pool)
            begin = time.monotonic()
            self._step("checks")
            self._checks(repo, snapshot)
            self._phase("checks", begin)
            rto_measured = time.monotonic() - clock_start  # fetch .. checks
            self._pitr(repo, root)
        finally:
            self._cancel.set()  # restores still on threads (after a failure, Ctrl-C) stop
            begin = time.monotonic()
            self._step("teardown")
            for start in self._starts.values():  # a server still starting is registered for
                _settled(start)  # teardown only once its start returns: wait for it
            for thread in self._threads:  # the file restores stop reading: cancel is set
                thread.join()
            problems = root.close()  # stops the servers: their restores end
            pool.shutdown(wait=True, cancel_futures=True)
            self._reads.close()
            self._phase("teardown", begin, ok=not problems, detail="; ".join(problems))
        for problem in problems:
            self.reasons.append(f"teardown: {problem}")
        return self._record(snapshot, newest, started, rto_measured)

    def _start_servers(self, root: ScratchRoot, pool: ThreadPoolExecutor) -> None:
        """Start a throwaway server for each database kind of the plan (without a named
        scratch server) on a thread: it is ready or nearly when the snapshot is chosen. A
        start that fails only matters if the snapshot has a source that needs it."""
        kinds = {s.type for s in self.plan.sources}
        for kind in DATABASE_KINDS:
            if kind in kinds and not self._named_server(kind):
                self._starts[kind] = pool.submit(self._start_server, kind, root)

    def _start_server(self, kind: str, root: ScratchRoot) -> tuple[ScratchDatabases, float]:
        begin = time.monotonic()
        server = ThrowawayPostgres(root) if kind == "postgres" else ThrowawayMariadb(root)
        self.observe(f"starting a {server.describe()}")
        self._step("scratch", kind)
        server.start()
        return server, time.monotonic() - begin

    def _pitr(self, repo: Repository, root: ScratchRoot) -> None:
        """Each `pitr = "wal"` source is also recovered to a moment (pitr/drill.py)."""
        for config in self.plan.sources:
            if not isinstance(config, PostgresConfig) or not config.pitr_wal:
                continue
            begin = time.monotonic()
            name = f"point-in-time recovery of {config.name} to {self.plan.drill.pitr_at}"
            self.observe(f"recovering {config.name} to {self.plan.drill.pitr_at} (PITR)")
            try:
                result = drill_pitr(repo, self.plan, config, self.plan.drill.pitr_at,
                                    list(self.plan.drill.freshness_columns), root,
                                    self.now(), self.environ)  # fmt: skip
            except SafeholdError as err:
                self._fail(f"{name} failed: {err.message}")
                self._add(CheckResult(name, "pitr", False, redact(err.message)))
                self._phase(f"pitr:{config.name}", begin, ok=False, detail=err.message)
                continue
            self.pitr.append(result.to_json())
            if not result.ok:
                self._fail(f"{name}: {result.detail}")
            self._add(CheckResult(name, "pitr", result.ok, redact(result.detail),
                                  round(result.seconds, 3), warning=result.warning))  # fmt: skip
            self._phase(f"pitr:{config.name}", begin, ok=result.ok, detail=result.detail)

    def _phase(self, name: str, begin: float, *, ok: bool = True, detail: str = "") -> Phase:
        phase = Phase(name, round(time.monotonic() - begin, 3), ok, redact(detail))
        self.phases.append(phase)
        return phase

    def _compare_early(
        self, repo: Repository, snapshot: Snapshot, outcomes: dict[str, Future[_Outcome] | _Outcome]
    ) -> None:
        """Compare the files restored so far with the snapshot now, on this thread, instead of
        in the checks after the databases: nothing changes them in between."""
        assert self.scratch is not None
        for config in self.plan.sources:
            outcome = outcomes.get(config.name)
            if (
                isinstance(config, FilesConfig | BucketConfig)
                and isinstance(outcome, tuple)
                and outcome[0].ok
                and config.name in self.scratch.folders
            ):
                self._compared[config.name] = self._compare(repo, snapshot, config)

    def _named_server(self, kind: str) -> str | None:
        drill = self.plan.drill
        return drill.scratch_postgres if kind == "postgres" else drill.scratch_mysql

    def _prepare_and_restore(
        self, repo: Repository, snapshot: Snapshot, root: ScratchRoot, pool: ThreadPoolExecutor
    ) -> None:
        """Restore every source of the snapshot. Database sources restore on threads, each
        as soon as its server is up, while the other sources restore here: one after the
        other they would wait for each other. Results are recorded in the plan's order."""
        manifests: dict[str, dict[str, object]] = snapshot.safehold.get("sources") or {}
        begin = time.monotonic()
        present = {s.type for s in self.plan.sources if s.name in manifests}
        kinds = [kind for kind in DATABASE_KINDS if kind in present]
        servers: dict[str, Future[tuple[ScratchDatabases, float]]] = {}
        for kind in kinds:
            named = self._named_server(kind)
            if named:
                ready: Future[tuple[ScratchDatabases, float]] = Future()
                ready.set_result((NamedScratchServer(kind, named, root), 0.0))
                servers[kind] = ready
            else:
                servers[kind] = self._starts[kind]
        self.scratch = ScratchEnvironment(root=root.path, cwd=self.plan.base_dir)
        restorable = [
            (config, manifest)
            for config in self.plan.sources
            if (manifest := manifests.get(config.name)) is not None and not manifest.get("failed")
        ]
        threaded = [config for config, _ in restorable if config.type in DATABASE_KINDS]
        group = None
        if threaded:  # also the cancel flag of the restores on threads
            group = _GroupProgress(self.progress, [c.name for c, _ in restorable], self._cancel)
        outcomes: dict[str, Future[_Outcome] | _Outcome] = {}
        if group is not None:  # until every restore has ended, also after a failure
            self._reads.enter_context(repo.observe_data_reads(group.add))
        for config, manifest in restorable:
            if config.type in DATABASE_KINDS:
                outcomes[config.name] = pool.submit(
                    self._restore, repo, snapshot, config, manifest, servers, root, group
                )

        def restore_files() -> None:
            for config, manifest in restorable:
                if config.type not in DATABASE_KINDS:
                    outcomes[config.name] = self._restore(
                        repo, snapshot, config, manifest, servers, root, group
                    )
            if any(isinstance(o, Future) and not o.done() for o in outcomes.values()):
                self._compare_early(repo, snapshot, outcomes)  # while the databases restore

        if threaded and len(restorable) > len(threaded):
            self._beside_databases(restore_files).result()
        else:
            restore_files()
        finished = {
            name: outcome.result() if isinstance(outcome, Future) else outcome
            for name, outcome in outcomes.items()
        }
        self._reads.close()  # every restore has ended
        started = [servers[kind].result() for kind in kinds]  # all up: the restores ran
        waited = max([seconds for _, seconds in started], default=time.monotonic() - begin)
        detail = "; ".join(server.describe() for server, _ in started)
        self.phases.append(Phase("scratch", round(waited, 3), True, redact(detail)))
        for config in self.plan.sources:
            manifest = manifests.get(config.name)
            if manifest is None:
                self._missing_source(config.name, snapshot)
            elif manifest.get("failed"):
                self._fail(f"source {config.name} failed in this backup: {manifest['failed']}")
                self.sources.append(SourceResult(config.name, config.type, "", False,
                                                 error=str(manifest["failed"])))  # fmt: skip
            else:
                result, phase, reasons = finished[config.name]
                self.sources.append(result)
                self.phases.append(phase)
                self.reasons.extend(reasons)

    def _beside_databases(self, work: Callable[[], None]) -> Future[None]:
        """Run `work` (the file restores and their comparison) on a thread of its own at a
        lower CPU priority than the database restores: on a machine whose cores
        `pg_restore --jobs` saturates, the database is the long pole of the time to restore,
        and the files, far less work, still finish beside it. Teardown joins the thread."""
        done: Future[None] = Future()

        def run() -> None:
            lower_thread_priority(FILES_BESIDE_DATABASES_NICE)
            try:
                work()
            except BaseException as err:  # handed to the drill's thread, which raises it
                done.set_exception(err)
            else:
                done.set_result(None)

        thread = threading.Thread(target=run, name="safehold-drill-files", daemon=True)
        self._threads.append(thread)
        thread.start()
        return done

    def _missing_source(self, name: str, snapshot: Snapshot) -> None:
        self._fail(
            f"source {name} is not in snapshot {snapshot.short_id}: the backup missed it "
            f"(it holds: {', '.join(sorted(snapshot.safehold.get('sources') or {})) or 'nothing'})"
        )
        self.sources.append(SourceResult(name, "", "", False, error="not in the snapshot"))

    def _fail(self, reason: str) -> None:
        self.reasons.append(redact(reason))

    # ----- restoring one source -------------------------------------------------------------

    def _targets(
        self, config: AnySource, manifest: dict[str, object], servers: _Servers, root: ScratchRoot,
    ) -> list[tuple[str, str]]:  # fmt: skip
        """(target, label) pairs: one per database on a named scratch server, else one. A
        database source waits here for its server to be up."""
        if isinstance(config, PostgresConfig | MySQLConfig):
            server = servers[config.type].result()[0]
            databases = _database_names(manifest)
            if isinstance(server, NamedScratchServer):
                return [(f"{server.target_url(db)}?source_db={db}", db) for db in databases]
            return [(server.target_url(""), "")]
        folder = root.folder(config.name)
        if isinstance(config, SQLiteConfig):
            return [(str(folder / config.path.name), "")]
        return [(str(folder), "")]

    def _restore(
        self, repo: Repository, snapshot: Snapshot, config: AnySource,
        manifest: dict[str, object], servers: _Servers, root: ScratchRoot,
        group: _GroupProgress | None,
    ) -> _Outcome:  # fmt: skip
        """Restore one source (on the drill's thread or one of its own): its result, its
        phase and the reasons it fails the drill, recorded by the caller."""
        reasons: list[str] = []
        identity = Path(self.request.identity) if self.request.identity else None
        source = build_source(config, self.plan, identity=identity, environ=self.environ)
        begin = time.monotonic()
        result = SourceResult(config.name, config.type, "", True)
        stage = contextlib.ExitStack()
        try:
            stage.enter_context(self._staged(repo, snapshot, source, config, manifest, servers))
            targets = self._targets(config, manifest, servers, root)
            plans = [
                plan_restore(repo, snapshot, source, target, app=self.plan.app, env=self.plan.env)
                for target, _label in targets
            ]
            for plan in plans:
                if not plan.allowed:  # the production guard of every restore
                    raise ScratchError(
                        f"refusing to drill: the scratch target {redact_url(plan.target)} of "
                        f"source {config.name} is its production location",
                        hint="name a different scratch server in the plan's [drill] table",
                    )
            for plan in plans:
                target = plan.target
                if isinstance(source, SecretsSource) and not source.has_identity():
                    self.observe(f"checking the encrypted secrets of {config.name}")
                    with repo.locked(exclusive=False):
                        report = source.check_stored(repo, snapshot, manifest)
                    self.secrets[config.name] = report
                    result.summary.extend(report.summary)
                    continue
                self.observe(f"restoring {config.name} into {redact_url(target)}")
                if group is not None:  # restores run side by side: one progress for all
                    group.expect(plan.restore_bytes)
                    report = execute_restore(repo, plan)
                else:
                    report = execute_restore(repo, plan, progress=self.progress)
                if isinstance(source, SecretsSource):
                    self.secrets[config.name] = report
                result.summary.extend(redact(line) for line in report.summary)
                result.target = redact_url(target)
                result.command = restore_command(snapshot, config.name, result.target)
                if isinstance(source, SecretsSource) and self.request.identity:
                    result.command += f" --identity {shlex.quote(self.request.identity)}"
                accounts = report.details.get("accounts")
                if isinstance(accounts, dict) and accounts.get("checked"):
                    missing = self.account_checks.setdefault(config.name, [])
                    missing.extend(redact(str(line)) for line in accounts.get("missing", []))
                if report.details.get("verified") is False:
                    result.ok = False
                    reasons.append(redact(f"restore of {config.name} does not match the backup: "
                                          + "; ".join(report.warnings[:5])))  # fmt: skip
            self._register(config, manifest, servers, targets)
        except ScratchError:
            raise
        except SafeholdError as err:
            result.ok = False
            result.error = redact(err.message)
            reasons.append(redact(f"restore of {config.name} failed: {err.message}"))
        finally:
            stage.close()  # staged dumps are deleted
        seconds = time.monotonic() - begin
        result.seconds = round(seconds, 3)
        phase = Phase(f"restore:{config.name}", round(seconds, 3), result.ok, redact(result.error))
        return result, phase, reasons

    def _staged(
        self, repo: Repository, snapshot: Snapshot, source: object, config: AnySource,
        manifest: dict[str, object], servers: _Servers,
    ) -> AbstractContextManager[None]:  # fmt: skip
        """While a database source's scratch server is still starting, read its dumps out of
        the repository into temp files (PostgresSource.staged): its restore then only waits
        for pg_restore. Nothing to do when the server is up already."""
        start = servers.get(config.type)
        if isinstance(source, PostgresSource) and start is not None and not start.done():
            return source.staged(repo, snapshot, manifest)
        return _nothing()

    def _register(
        self, config: AnySource, manifest: dict[str, object], servers: _Servers,
        targets: list[tuple[str, str]],
    ) -> None:  # fmt: skip
        """Make the restored source reachable for checks and commands."""
        scratch = self.scratch
        assert scratch is not None
        var = env_name(config.name)
        if isinstance(config, PostgresConfig | MySQLConfig):
            server = servers[config.type].result()[0]
            names = _database_names(manifest)
            scratch.databases[config.name] = [
                Database(config.type, server.database_url(db), f"{config.name}/{db}")
                for db in names
            ]
            if names:
                url = server.database_url(names[0])
                scratch.variables[f"{var}_URL"] = url
                scratch.variables.setdefault("DATABASE_URL", url)
        elif isinstance(config, SQLiteConfig):
            path = targets[0][0]
            scratch.databases[config.name] = [
                Database("sqlite", path, f"{config.name}/{config.path.name}")
            ]
            scratch.variables[f"{var}_PATH"] = path
            scratch.variables[f"{var}_URL"] = f"sqlite:///{path}"
            scratch.variables.setdefault("DATABASE_URL", f"sqlite:///{path}")
        elif isinstance(config, FilesConfig):
            folder = Path(targets[0][0])
            restored = [folder / name for name in _folder_names(config)]
            scratch.folders[config.name] = restored
            scratch.production_folders[config.name] = [Path(p) for p in config.paths]
            scratch.variables[f"{var}_DIR"] = (
                str(restored[0]) if len(restored) == 1 else str(folder)
            )
            scratch.variables.setdefault("UPLOADS_DIR", scratch.variables[f"{var}_DIR"])
        elif isinstance(config, BucketConfig):
            folder = Path(targets[0][0])
            scratch.folders[config.name] = [folder]
            scratch.production_folders[config.name] = []
            scratch.variables[f"{var}_DIR"] = str(folder)
            scratch.variables.setdefault("UPLOADS_DIR", str(folder))
        elif isinstance(config, CommandConfig):
            scratch.variables[f"{var}_PATH"] = str(Path(targets[0][0]) / config.output_name)
        elif isinstance(config, SecretsConfig) and config.name in self.secrets:
            self._expose_secrets(config, Path(targets[0][0]))
        scratch.variables["SAFEHOLD_DRILL"] = "1"
        scratch.variables["SAFEHOLD_DRILL_DIR"] = str(scratch.root)

    def _expose_secrets(self, config: SecretsConfig, folder: Path) -> None:
        """Decrypted variables become the scratch environment of the checks (the app's own
        variables, like STRIPE_SECRET_KEY); the folder holds the decrypted files."""
        scratch = self.scratch
        assert scratch is not None
        if not self.secrets[config.name].details.get("decrypted"):
            return
        scratch.variables[f"{env_name(config.name)}_DIR"] = str(folder)
        env_file = folder / ENV_FILE
        if env_file.exists():
            variables = parse_dotenv(env_file.read_text(encoding="utf-8"))
            scratch.variables.update(variables)
            self.secret_values.extend(v for v in variables.values() if len(v) >= 4)

    def _hide_secrets(self, text: str) -> str:
        for value in sorted(self.secret_values, key=len, reverse=True):
            text = text.replace(value, "***")
        return redact(text)

    # ----- checks ---------------------------------------------------------------------------

    def _checks(self, repo: Repository, snapshot: Snapshot) -> None:
        restored = {s.name for s in self.sources if s.ok}
        everything = not self.reasons and len(restored) == len(self.plan.sources)
        self._add(CheckResult(
            "every source restored", "sources", everything,
            f"{len(restored)} of {len(self.plan.sources)} sources restored",
        ))  # fmt: skip
        for restored_source in self.sources:
            if restored_source.ok and restored_source.kind in (
                "postgres",
                "mysql",
                "sqlite",
                "command",
                "bucket",
            ):
                what = "row counts"
                if restored_source.kind in ("command", "bucket"):
                    what = "checksums"
                self._add(CheckResult(f"{what} of {restored_source.name} match the backup", "rows",
                                      True, "; ".join(restored_source.summary[:3])))  # fmt: skip
        self._secrets_checks()
        self._account_checks()
        self._file_checks(repo, snapshot)
        self._freshness(snapshot)
        assert self.scratch is not None
        for check in self.plan.drill.checks:
            self.observe(f"check: {check.label()}")
            result = run_check(check, self.scratch)
            result.detail = self._hide_secrets(result.detail)
            self._add(result)
            if not result.ok:
                self._fail(f"check failed: {result.name}: {result.detail}")

    def _secrets_checks(self) -> None:
        """One check per secrets source: decrypted and verified (with an identity), or only
        present, complete and addressed to the recipients (a warning: not decrypted)."""
        for name, report in self.secrets.items():
            ok = any(s.name == name and s.ok for s in self.sources)
            if report.details.get("decrypted"):
                self._add(CheckResult(f"secrets of {name} decrypted and verified", "secrets", ok,
                                      "; ".join(report.summary[:1])))  # fmt: skip
            else:
                self._add(CheckResult(
                    f"secrets of {name} present and encrypted to the recipients", "secrets", ok,
                    "; ".join(report.summary[:1]) + ": give --identity FILE (or identity_command) "
                    "to prove they decrypt", warning=True,
                ))  # fmt: skip

    def _account_checks(self) -> None:
        """The roles/users and grants recorded at backup time against the scratch server's
        (the sources compare them while restoring; see sources/pg_accounts, my_accounts)."""
        for name, missing in self.account_checks.items():
            detail = (
                "every role/user, owner, grant and policy of the backup is there"
                if not missing
                else f"{len(missing)} missing: " + "; ".join(missing[:5])
            )
            self._add(CheckResult(f"roles and grants of {name} came along", "roles",
                                  not missing, detail))  # fmt: skip
            if missing:
                self._fail(f"roles and grants of {name}: {detail}")

    def _add(self, result: CheckResult) -> None:
        self.checks.append(result)

    def _compare(
        self, repo: Repository, snapshot: Snapshot, config: FilesConfig | BucketConfig
    ) -> TreeComparison:
        """The restored files of `config` against the snapshot's blob ids."""
        assert self.scratch is not None
        folder = self.scratch.folders[config.name][0]
        if isinstance(config, FilesConfig):  # its folders are inside the target
            folder = folder.parent
        return compare_restored_tree(repo, snapshot.tree, f"/{config.name}", folder)

    def _file_checks(self, repo: Repository, snapshot: Snapshot) -> None:
        assert self.scratch is not None
        for config in self.plan.sources:
            if not isinstance(config, FilesConfig | BucketConfig):
                continue
            if config.name not in self.scratch.folders:
                continue
            if not any(s.name == config.name and s.ok for s in self.sources):
                continue
            comparison = self._compared.get(config.name) or self._compare(repo, snapshot, config)
            ok = comparison.ok and comparison.files > 0
            if comparison.files == 0 and comparison.ok:
                detail = "the snapshot holds no files for this source: the backup missed them?"
            elif comparison.ok:
                detail = f"{comparison.files:,} files, {comparison.bytes:,} bytes identical"
            else:
                detail = f"{comparison.problem_count} difference(s): " + "; ".join(
                    comparison.problems[:3]
                )
            self._add(
                CheckResult(f"files of {config.name} match the snapshot", "files", ok, detail)
            )
            if not ok:
                self._fail(f"files of {config.name}: {detail}")

    def _freshness(self, snapshot: Snapshot) -> None:
        assert self.scratch is not None
        columns = list(self.plan.drill.freshness_columns)
        newest = None
        for databases in self.scratch.databases.values():
            for database in databases:
                try:
                    found = newest_records(database, columns)
                except CheckQueryError as err:
                    self._add(
                        CheckResult("newest record", "freshness", True, err.message, warning=True)
                    )
                    continue
                if found and (newest is None or found[0].value > newest[1].value):
                    newest = (database, found[0])
        if newest is None:
            self._add(CheckResult(
                "newest record", "freshness", True,
                f"no table has a dated column ({', '.join(columns)}): data age not measured",
                warning=True,
            ))  # fmt: skip
            return
        database, record = newest
        age = (_utc(snapshot) - record.value).total_seconds()
        self.newest_record_age_s = max(age, 0.0)
        rpo = self.plan.targets.rpo.total_seconds()
        detail = (
            f"newest row {database.label} {record.table}.{record.column} = "
            f"{record.value.isoformat(timespec='seconds')}, "
            f"{format_duration_s(self.newest_record_age_s)} before the backup"
        )
        stale = age > rpo
        if stale:
            detail += f" (older than the RPO of {format_duration_s(rpo)}: is the app writing here?)"
        self._add(CheckResult("newest record", "freshness", True, detail, warning=stale))

    # ----- the record -----------------------------------------------------------------------

    def _record(
        self, snapshot: Snapshot, newest: bool, started: datetime, rto_s: float
    ) -> DrillRecord:
        rto_target = self.plan.targets.rto.total_seconds()
        rpo_target = self.plan.targets.rpo.total_seconds()
        data_age = max((started - _utc(snapshot)).total_seconds(), 0.0)
        rto_ok = rto_s <= rto_target
        self.checks.append(CheckResult(
            f"time to restore within the RTO ({format_duration_s(rto_target)})", "rto", rto_ok,
            f"measured {format_duration_s(rto_s)}",
        ))  # fmt: skip
        if not rto_ok:
            self._fail(
                f"time to restore {format_duration_s(rto_s)} exceeds the RTO of "
                f"{format_duration_s(rto_target)}"
            )
        rpo_ok = data_age <= rpo_target
        rpo_detail = f"restoring now loses {format_duration_s(data_age)} of data"
        if not rpo_ok and not newest:
            rpo_detail += " (an older snapshot was chosen on purpose)"
        self.checks.append(CheckResult(
            f"data age within the RPO ({format_duration_s(rpo_target)})", "rpo",
            rpo_ok or not newest, rpo_detail, warning=not rpo_ok and not newest,
        ))  # fmt: skip
        if not rpo_ok and newest:
            self._fail(
                f"the newest backup is {format_duration_s(data_age)} old, more than the RPO of "
                f"{format_duration_s(rpo_target)}: back up more often"
            )
        return DrillRecord(
            started=started, finished=self.now(), passed=not self.reasons,
            snapshot_id=snapshot.id, snapshot_name=snapshot.name or "",
            snapshot_time=_utc(snapshot), app=self.plan.app, env=self.plan.env,
            destination=self.request.destination, host=socket.gethostname(),
            reasons=list(self.reasons), phases=self.phases, sources=self.sources,
            checks=self.checks, rto_target_s=rto_target, rto_measured_s=round(rto_s, 3),
            rpo_target_s=rpo_target, data_age_s=round(data_age, 3),
            newest_record_age_s=self.newest_record_age_s, pitr=self.pitr,
        )  # fmt: skip


DATABASE_KINDS = ("postgres", "mysql")  # sources restored into a scratch server, on threads
#: How much lower (nice) the file restores run beside the database restores (weight ~1/3).
FILES_BESIDE_DATABASES_NICE = 5

_Servers = dict[str, Future[tuple[ScratchDatabases, float]]]  # kind -> (server, start seconds)
_Outcome = tuple[SourceResult, Phase, list[str]]  # a source's result, phase, failure reasons


class DrillInterruptedError(ScratchError):
    """The drill is being torn down (a failure elsewhere, Ctrl-C): a restore on a thread
    stops at its next blob."""


class _GroupProgress:
    """The progress of restores running side by side: the bytes all of them read (from any
    thread), of all their totals, as one report naming every source. Every read also checks
    the drill's cancel flag, so a restore on a thread stops when the drill tears down."""

    def __init__(
        self, progress: ProgressCallback | None, sources: list[str], cancel: threading.Event
    ) -> None:
        self._progress = progress
        self._label = ", ".join(sources)
        self._cancel = cancel
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0

    def expect(self, total: int) -> None:
        with self._lock:
            self._total += total
        self._report()

    def add(self, size: int) -> None:
        if self._cancel.is_set():
            raise DrillInterruptedError("the drill was interrupted; its restores stop")
        with self._lock:
            self._done += size
        self._report()

    def _report(self) -> None:
        if self._progress is None:
            return
        with self._lock:
            done, total = self._done, max(self._total, self._done)
        self._progress(Progress("restore", done, total, "bytes", current=self._label,
                                source=self._label))  # fmt: skip


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _settled(future: Future[Any]) -> None:
    """Wait for `future` to finish, whatever its outcome."""
    with suppress(Exception):  # its outcome is reported where it is used
        future.result()


def _database_names(manifest: dict[str, object]) -> list[str]:
    """The databases a database source's manifest holds, sorted."""
    databases = manifest.get("databases")
    return sorted(databases) if isinstance(databases, dict) else []


def _folder_names(config: FilesConfig) -> list[str]:
    return folder_names([Path(p) for p in config.paths])


def format_duration_s(seconds: float) -> str:
    """Short human durations: 0.4s, 12.3s, 4m05s, 2h10m, 3d4h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def restore_command(snapshot: Snapshot, source: str, target: str) -> str:
    """The CLI command doing the same restore as the drill (shown in the runbook)."""
    return (
        f"safehold restore {snapshot.short_id} --source {shlex.quote(source)} "
        f"--into {shlex.quote(target)}"
    )
