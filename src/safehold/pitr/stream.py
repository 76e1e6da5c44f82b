"""`safehold wal-stream`: WAL over a replication connection, with a slot, into the repository.

The streamer runs `pg_receivewal` (PostgreSQL's own client) into `SPOOL/receiving/` and
hands every completed segment to the async archive's pusher (spool.Pusher: one opened
repository, batches, a file removed only after its batch snapshot is written):

- `pg_receivewal` writes the segment being streamed as `NAME.partial`; when the segment is
  complete it fsyncs it, renames it to `NAME` and fsyncs the folder. Only then does the
  streamer move it (a rename, then an fsync of both folders) from `receiving/` into the
  spool, where the pusher takes it. A `.partial` file never reaches the pusher (whose spool
  would otherwise take it as a WAL file name).
- The replication slot (`safehold` by default, created with its WAL reserved at once) makes
  the server keep every segment the streamer has not confirmed as flushed. `pg_receivewal`
  confirms a segment once it is fsync'd in the spool (`--synchronous`: every write).
- A restart resumes: `pg_receivewal` starts at the newest file in `receiving/` (a
  `.partial` is fetched again from its segment's start) or, with none, at the slot's
  `restart_lsn`, which is never past what the spool holds. A segment fetched twice has the
  same bytes and is found "already stored".
- `pg_receivewal` runs with a parent-death signal: a streamer killed with -9 takes its
  `pg_receivewal` with it, so a restarted streamer finds the slot free.
- SIGTERM/SIGINT (`stop`): `pg_receivewal` gets SIGINT and exits after its current write,
  then the finished segments are pushed, then `run` returns.

The pusher's lock file in the spool keeps a second streamer (or a `wal-push --daemon`) off
the same spool.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from safehold.app.inspect import human_bytes
from safehold.errors import SafeholdError
from safehold.pitr.errors import PitrError
from safehold.pitr.setup import archive_timeout_for
from safehold.pitr.spool import Pusher
from safehold.pitr.spoolfile import clean_stale_temp_files, fsync_dir, pusher_lock
from safehold.pitr.walnames import parse_wal_name
from safehold.redaction import redact_secrets
from safehold.repo.repository import Repository
from safehold.runtime import kill_when_parent_dies
from safehold.sources.postgres import PostgresSource

DEFAULT_SLOT = "safehold"
RECEIVING = "receiving"  # pg_receivewal's folder inside the spool
SLOT_KEEP = "20GB"  # what `pitr setup` proposes for max_slot_wal_keep_size


class StreamRightsError(PitrError):
    """The server or the source's user is not set up for a replication connection."""

    default_hint = "run `safehold pitr setup --mode stream` for the exact statements"


class StreamerBusyError(PitrError):
    """Another streamer or pusher already works on this spool."""


@dataclass
class StreamCheck:
    """One requirement of streaming: whether it holds, and the fix when it does not."""

    name: str
    ok: bool
    current: str
    fix: str = ""
    statement: str | None = None  # SQL that fixes it (run by `pitr setup --apply`)
    needs_restart: bool = False
    required: bool = True  # False: advice (`pitr setup` shows it; `wal-stream` runs anyway)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(
    source: PostgresSource, replication: bool = False
) -> psycopg.Connection[tuple[Any, ...]]:
    location = source.location
    conninfo = location.conninfo(location.dbname or "postgres")
    if replication:  # the physical replication protocol: what pg_receivewal will use
        conninfo += " replication=true"
    return psycopg.connect(
        conninfo, password=location.password, autocommit=True, connect_timeout=30,
        application_name="safehold",
    )  # fmt: skip


def _one_line(err: BaseException, source: PostgresSource) -> str:
    text = " ".join(str(err).split())
    return redact_secrets(text, [source.location.password])


def _hba_line(source: PostgresSource, user: str) -> str:
    host = source.location.params.get("host", "")
    if not host or host.startswith("/"):
        return f"local replication {user} scram-sha-256"
    address = (
        "127.0.0.1/32"
        if host in ("localhost", "127.0.0.1")
        else f"{host}/32 (the client's address)"
    )
    return f"host replication {user} {address} scram-sha-256"


def check_streaming(
    source: PostgresSource, slot: str = DEFAULT_SLOT, rpo: timedelta | None = None
) -> list[StreamCheck]:
    """What streaming needs from the server: wal_level, a free WAL sender, the REPLICATION
    right, a pg_hba.conf replication entry (tried with a real replication connection), the
    slot and (with `rpo`) an archive_timeout that closes a segment in time. Changes nothing."""
    try:
        conn = _connect(source)
    except psycopg.Error as err:
        raise PitrError(
            f"cannot connect to {source.location.redacted}: {_one_line(err, source)}"
        ) from None
    with conn:
        user, superuser, replication = conn.execute(
            "SELECT current_user, rolsuper, rolreplication FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone() or ("?", False, False)
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_wal_senders', "
            "'archive_timeout', 'max_slot_wal_keep_size')"
        ).fetchall())  # fmt: skip
        senders = int(conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()[0])  # type: ignore[index]
        slot_row = conn.execute(
            "SELECT slot_type, active, active_pid, restart_lsn::text FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    user = str(user)
    checks: list[StreamCheck] = []
    wal_level = settings.get("wal_level", "")
    checks.append(StreamCheck(
        "wal_level", wal_level in ("replica", "logical"), wal_level,
        "ALTER SYSTEM SET wal_level = 'replica', then restart PostgreSQL",
        "ALTER SYSTEM SET wal_level = 'replica'", needs_restart=True,
    ))  # fmt: skip
    max_senders = int(settings.get("max_wal_senders") or 0)
    checks.append(StreamCheck(
        "max_wal_senders", max_senders > senders,
        f"{max_senders} ({senders} in use)",
        f"ALTER SYSTEM SET max_wal_senders = {max(10, senders + 2)}, then restart PostgreSQL",
        f"ALTER SYSTEM SET max_wal_senders = {max(10, senders + 2)}", needs_restart=True,
    ))  # fmt: skip
    if rpo is not None:  # the streamer pushes finished segments: one must finish in time
        timeout = archive_timeout_for(rpo)
        current = int(settings.get("archive_timeout") or 0)
        checks.append(StreamCheck(
            "archive_timeout", 0 < current <= timeout, str(current),
            f"ALTER SYSTEM SET archive_timeout = {timeout} (half the RPO: an idle server "
            "still closes its segment in time)",
            f"ALTER SYSTEM SET archive_timeout = {timeout}", required=False,
        ))  # fmt: skip
        keep = settings.get("max_slot_wal_keep_size", "-1")
        checks.append(StreamCheck(
            "max_slot_wal_keep_size", keep not in ("-1", ""), "unlimited" if keep == "-1" else
            f"{keep} MB", f"ALTER SYSTEM SET max_slot_wal_keep_size = '{SLOT_KEEP}' (a stopped "
            "streamer then costs at most that much disk; past it the slot is given up and "
            "`wal status` shows the gap)", f"ALTER SYSTEM SET max_slot_wal_keep_size = "
            f"'{SLOT_KEEP}'", required=False,
        ))  # fmt: skip
    rights = bool(superuser or replication)
    checks.append(StreamCheck(
        "replication_role", rights,
        "superuser" if superuser else ("REPLICATION" if replication else "NOREPLICATION"),
        f"ALTER ROLE {quote_ident(user)} REPLICATION (as a superuser)",
        f"ALTER ROLE {quote_ident(user)} REPLICATION",
    ))  # fmt: skip
    hba_ok, hba_current = True, "a replication connection is accepted"
    if rights:
        try:
            with _connect(source, replication=True):
                pass
        except psycopg.Error as err:
            hba_ok, hba_current = False, _one_line(err, source)
    else:
        hba_ok, hba_current = False, "not tried (the role has no REPLICATION right)"
    checks.append(StreamCheck(
        "pg_hba_replication", hba_ok, hba_current,
        f"add `{_hba_line(source, user)}` to pg_hba.conf, then SELECT pg_reload_conf()",
    ))  # fmt: skip
    if slot_row is None:
        checks.append(StreamCheck(
            "slot", False, "missing",
            f"SELECT pg_create_physical_replication_slot('{slot}', true) "
            "(wal-stream also creates it)",
            f"SELECT pg_create_physical_replication_slot('{slot}', true)",
        ))  # fmt: skip
    elif slot_row[0] != "physical":
        checks.append(StreamCheck(
            "slot", False, f"{slot} is a {slot_row[0]} slot",
            f"pick another name with --slot, or SELECT pg_drop_replication_slot('{slot}')",
        ))  # fmt: skip
    else:
        state = f"physical, restart_lsn {slot_row[3]}" + (
            f", in use by pid {slot_row[2]}" if slot_row[1] else ", not in use"
        )
        checks.append(StreamCheck("slot", True, state))
    return checks


@dataclass(frozen=True)
class SlotState:
    """What the server keeps for the streamer: its replication slot, seen by `status`,
    `watch` and `metrics` (pitr/health.py). A slot no streamer uses holds WAL on the
    server's disk until max_slot_wal_keep_size, and past it the server gives the WAL up."""

    name: str
    exists: bool
    active: bool = False
    retained_bytes: int | None = None  # WAL the server keeps for the slot
    wal_status: str | None = None  # PostgreSQL 13+: reserved, extended, unreserved, lost

    @property
    def lost(self) -> bool:
        """The server already removed WAL the streamer had not received (or is about to)."""
        return self.wal_status in ("lost", "unreserved")

    def problem(self) -> str | None:
        held = human_bytes(self.retained_bytes) if self.retained_bytes else "no"
        if not self.exists:
            return (f"the replication slot {self.name} does not exist: the server keeps no WAL "
                    "for the streamer")  # fmt: skip
        if self.wal_status == "lost":
            return (f"the replication slot {self.name} lost WAL the streamer had not received "
                    "(max_slot_wal_keep_size was passed): the archive has a gap")  # fmt: skip
        if self.wal_status == "unreserved":
            return (
                f"the replication slot {self.name} holds {held} of WAL, past "
                "max_slot_wal_keep_size: the next checkpoint removes WAL not yet streamed"
            )
        if not self.active:
            return (f"no streamer uses the replication slot {self.name}; the server keeps {held} "
                    "of WAL for it")  # fmt: skip
        return None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "exists": self.exists, "active": self.active,
                "retained_bytes": self.retained_bytes, "wal_status": self.wal_status,
                "problem": self.problem()}  # fmt: skip


def streamer_fix(source: str) -> str:
    """What to do when the slot says no streamer runs."""
    return (f"start the streamer: safehold wal-stream --source {source} (`safehold run` and "
            "the service `safehold schedule install` writes keep it running)")  # fmt: skip


def read_slot(conn: psycopg.Connection[tuple[Any, ...]], slot: str) -> SlotState:
    """The state of replication slot `slot`, on an open connection."""
    status = "wal_status" if conn.info.server_version >= 130000 else "NULL"
    row = conn.execute(
        "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
        f"{status} FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return SlotState(slot, exists=False)
    retained = None if row[1] is None else max(0, int(row[1]))
    return SlotState(slot, True, bool(row[0]), retained, None if row[2] is None else str(row[2]))


def require_streaming(source: PostgresSource, slot: str) -> None:
    """Raise a one-line StreamRightsError (with the fix) for the first unmet requirement
    (a missing slot is not one: the streamer creates it)."""
    for check in check_streaming(source, slot):
        if not check.ok and check.required and check.name != "slot":
            raise StreamRightsError(
                f"streaming WAL from {source.location.redacted} needs {check.name}: "
                f"{check.current}",
                hint=check.fix,
            )
        if not check.ok and check.name == "slot" and check.statement is None:
            raise StreamRightsError(f"replication slot: {check.current}", hint=check.fix)


def ensure_slot(source: PostgresSource, slot: str) -> bool:
    """Create the physical slot with its WAL reserved now (so nothing written before the
    first connection is lost); False when it existed."""
    try:
        with _connect(source) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if found:
                return False
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
            return True
    except psycopg.errors.DuplicateObject:
        return False
    except psycopg.Error as err:
        raise StreamRightsError(
            f"cannot create the replication slot {slot}: {_one_line(err, source)}"
        ) from None


def find_receivewal(bin_dir: str | None) -> str:
    """pg_receivewal: the source's bin folder (/usr/lib/postgresql/N/bin), else PATH."""
    candidates = [os.path.join(bin_dir, "pg_receivewal")] if bin_dir else []
    candidates.append(shutil.which("pg_receivewal") or "")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise PitrError(
        "pg_receivewal is not installed",
        hint="install the PostgreSQL client tools (Debian: postgresql-client)",
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    kill_when_parent_dies()
    os.setpgrp()  # a Ctrl-C in the terminal reaches the streamer, which stops it in order


@dataclass
class StreamStats:
    pushed: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    receiver_starts: int = 0


class WalStreamer:
    """pg_receivewal into `spool`, the pusher from `spool` into the repository."""

    def __init__(
        self,
        source: PostgresSource,
        spool: Path,
        open_repo: Callable[[], Repository],
        *,
        slot: str = DEFAULT_SLOT,
        synchronous: bool = False,
        poll: float = 0.5,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.source = source
        self.spool = spool
        self.receiving = spool / RECEIVING
        self.slot = slot
        self.synchronous = synchronous
        self.poll = poll
        self.log = log
        self.pusher = Pusher(spool, open_repo, log=log)
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._receiver: subprocess.Popen[bytes] | None = None
        self._receivewal = find_receivewal(source.bin_dir)

    def argv(self) -> list[str]:
        location = self.source.location
        argv = [
            self._receivewal, "-d", location.conninfo(location.dbname or "postgres"),
            "-D", str(self.receiving), "--slot", self.slot, "--no-loop", "--no-password",
            "--status-interval", "5",
        ]  # fmt: skip
        if self.synchronous:
            argv.append("--synchronous")
        return argv

    def stop(self) -> None:
        """Ask `run` to finish: stop pg_receivewal, push what is complete, return."""
        self._stop.set()

    def prepare(self) -> bool:
        """Check the rights and create the slot when missing; True when it was created."""
        self._make_folders()
        require_streaming(self.source, self.slot)
        return ensure_slot(self.source, self.slot)

    def _make_folders(self) -> None:
        try:
            self.receiving.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise PitrError(
                f"cannot create the WAL spool folder {self.spool}: {err.strerror}",
                hint="create it, owned by the account wal-stream runs as, or pass --spool DIR",
            ) from None

    def run(self) -> StreamStats:
        self._make_folders()
        with pusher_lock(self.spool) as held:
            if held is None:
                raise StreamerBusyError(
                    f"another streamer or pusher holds the spool {self.spool}",
                    hint="stop it first, or give this one its own --spool folder",
                )
            clean_stale_temp_files(self.spool)
            if self.prepare():
                self.log(f"created the replication slot {self.slot} (its WAL is reserved)")
            mode = " (synchronous)" if self.synchronous else ""
            self.log(f"streaming WAL from {self.source.location.redacted} via slot {self.slot} "
                     f"into {self.spool}{mode}")  # fmt: skip
            try:
                self._loop()
            finally:
                self._stop_receiver()
                self._push()  # what pg_receivewal completed before it stopped
            self.log("stopped: pg_receivewal ended, completed segments pushed")
        return self.stats

    def _loop(self) -> None:
        delay, next_start, started = 1.0, 0.0, 0.0
        while not self._stop.is_set():
            receiver = self._receiver
            if receiver is not None and receiver.poll() is not None:
                if time.monotonic() - started > 60:
                    delay = 1.0  # it ran a while: retry the next failure quickly
                self.log(f"pg_receivewal exited {receiver.returncode}; restarting in {delay:.0f} s")
                self._receiver = None
                next_start = time.monotonic() + delay
                delay = min(delay * 2, 60.0)
            if self._receiver is None and time.monotonic() >= next_start:
                self._start_receiver()
                started = time.monotonic()
            self._stop.wait(self.poll if self._push() else 5.0)

    def _hand_over(self) -> None:
        """Move the segments pg_receivewal completed into the pusher's spool."""
        try:
            names = os.listdir(self.receiving)
        except FileNotFoundError:
            return
        done = [n for n in names if (p := parse_wal_name(n)) is not None and p.kind != "partial"]
        if not done:
            return
        try:
            for name in sorted(done):
                os.replace(self.receiving / name, self.spool / name)
            fsync_dir(self.spool)
            fsync_dir(self.receiving)
        except OSError as err:
            self.log(f"error: cannot move WAL into the spool {self.spool}: {err.strerror}")

    def _push(self) -> bool:
        self._hand_over()
        try:
            done = self.pusher.run_once()
        except SafeholdError as err:
            self.log(f"error: {err.message} (the spool keeps the segments; retrying)")
            self.pusher = Pusher(self.spool, self.pusher.open_repo, log=self.log)
            return False
        self.stats.pushed += done.pushed
        self.stats.already += done.already
        return True

    def _start_receiver(self) -> None:
        self.stats.receiver_starts += 1
        try:
            self._receiver = subprocess.Popen(
                self.argv(), env=self.source.pg_env(), cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
            )  # fmt: skip
        except OSError as err:
            raise PitrError(f"cannot run {self._receivewal}: {err.strerror}") from None
        stderr = self._receiver.stderr
        assert stderr is not None
        threading.Thread(target=self._relay, args=(stderr,), daemon=True).start()

    def _relay(self, stream: Any) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.log(redact_secrets(line, [self.source.location.password]))

    def _stop_receiver(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is None or receiver.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            receiver.send_signal(signal.SIGINT)  # pg_receivewal: flush, close, exit 0
        try:
            receiver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()


def fix_statements(checks: list[StreamCheck]) -> list[str]:
    """The SQL that fixes the unmet checks (pg_hba.conf is a file: not among them)."""
    statements = [c.statement for c in checks if not c.ok and c.statement]
    if any(s.startswith("ALTER SYSTEM") for s in statements):
        statements.append("SELECT pg_reload_conf()")
    return statements


def apply_fixes(source: PostgresSource, statements: list[str]) -> None:
    """Run `fix_statements` (ALTER SYSTEM, ALTER ROLE and the slot need a superuser)."""
    try:
        with _connect(source) as conn:
            for statement in statements:
                conn.execute(statement.encode())
    except psycopg.Error as err:
        raise PitrError(
            f"cannot apply the streaming settings: {_one_line(err, source)}",
            hint="run the printed statements as a superuser (psql -U postgres)",
        ) from None
