"""Shared helpers of the database sources: running dump and restore tools, secrets, URLs.

* Dump tools run as subprocesses whose stdout is streamed straight into the snapshot
  (`tool_output`, on sources/process.py's `stream_process`); their stderr is kept (the last
  16 KiB) for the error message, which is always redacted. Passwords reach the tools
  through the environment or a 0600 temp file, never through argv.
* `restore_plan` is the one rule, shared by all database sources, for which database of a
  snapshot goes where (see its docstring).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from safehold.errors import SafeholdError, UsageError
from safehold.redaction import redact_secrets
from safehold.sources.base import RestoreReport
from safehold.sources.process import (
    ProcessExit,
    ProcessOutput,
    StderrTail,
    kill_process,
    start_process,
    stream_process,
)

_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "::", "localhost."}


class DatabaseError(SafeholdError):
    """A database source failed; the message names the database and never holds a password."""


class DumpError(DatabaseError):
    default_hint = (
        "check the source's URL, that the database exists, and that the user may read it; "
        "the tool's own message is part of the error"
    )


_AUTH_FAILURES = (
    "password authentication failed",  # PostgreSQL: wrong password
    "no password supplied",  # PostgreSQL: none in the URL, PGPASSWORD or .pgpass
    "password is required",
    "authentication failed",
    "access denied for user",  # MySQL / MariaDB (error 1045)
)
AUTH_HINT = (
    "the target refused the credentials: put the password in the target URL "
    "(postgresql://user:PASSWORD@host/db, mysql://user:PASSWORD@host/db), or for PostgreSQL in "
    "PGPASSWORD or ~/.pgpass; check the user name too"
)


def is_auth_failure(text: str) -> bool:
    """Whether a driver's or tool's message says the login was refused."""
    lowered = text.lower()
    return any(pattern in lowered for pattern in _AUTH_FAILURES)


class RestoreError(DatabaseError):
    """A restore failed. Without an explicit hint the hint follows the error: credentials
    for a refused login, else the tool's own message and an empty target."""

    default_hint = "restore into a new, empty database; the tool's own message is part of the error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        if hint is None and is_auth_failure(message):
            hint = AUTH_HINT
        super().__init__(message, hint)


class RestoreVerificationError(DatabaseError):
    """The restored data does not match the backup's manifest (raised by callers that want it,
    see `require_verified`)."""

    default_hint = "compare the report's row counts; the backup may be from a damaged snapshot"


def pop_query_param(url: str, name: str) -> tuple[str, str | None]:
    """Remove `name=value` from a URL's query; returns the new URL and the value."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    value = None
    kept = []
    for key, val in pairs:
        if key == name:
            value = val
        else:
            kept.append((key, val))
    if value is None:
        return url, None
    return urlunsplit(parts._replace(query=urlencode(kept, safe="/"))), value


# ----- servers ----------------------------------------------------------------------------


def normalize_host(host: str | None) -> str:
    """One name for every way of saying "this machine" (loopback names, unix socket dirs, the
    machine's own hostname), lowercase otherwise. Used to refuse restores onto the source."""
    value = (host or "").strip().lower()
    if value in _LOCAL_HOSTS or value.startswith("/") or value.startswith("@"):
        return "local"
    if value.startswith("127."):
        return "local"
    with contextlib.suppress(OSError):
        if value in {socket.gethostname().lower(), socket.getfqdn().lower()}:
            return "local"
    return value


def restore_plan(
    available: list[str], target_db: str | None, source_db: str | None
) -> list[tuple[str, str]]:
    """Which backed-up database goes to which target database, as (source, target) pairs.

    * target URL names a database: ONE source database is restored into it: the only one in
      the snapshot, or the one named by `?source_db=NAME` when the snapshot holds several;
    * target URL names no database (a server URL): EVERY database of the snapshot is restored
      under its own name (or only `?source_db=NAME`, under its own name).
    """
    if not available:
        raise UsageError("the snapshot's manifest lists no database to restore")
    names = ", ".join(available)
    if source_db is not None:
        if source_db not in available:
            raise UsageError(
                f"database {source_db} is not in this backup (it holds: {names})",
                hint="name one of them with ?source_db=NAME",
            )
        return [(source_db, target_db or source_db)]
    if target_db is not None:
        if len(available) == 1:
            return [(available[0], target_db)]
        raise UsageError(
            f"this backup holds {len(available)} databases ({names}): say which one goes into "
            f"database {target_db}",
            hint="add ?source_db=NAME to the target URL, or give a server URL without a "
            "database to restore all of them under their own names",
        )
    return [(db, db) for db in available]


def dump_file_name(database: str, suffix: str) -> str:
    """A database's file name in the snapshot folder (`/` and `%` escaped)."""
    return database.replace("%", "%25").replace("/", "%2F") + suffix


# ----- subprocesses -----------------------------------------------------------------------


def _cannot_run(
    what: str, argv: list[str], error: type[DatabaseError]
) -> Callable[[OSError], SafeholdError]:
    def cannot_run(err: OSError) -> SafeholdError:
        return error(
            f"{what}: cannot run {argv[0]}: {err.strerror or err}",
            hint="install the database client tools (Debian: postgresql-client, "
            "mariadb-client) or set the source's bin_dir",
        )

    return cannot_run


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    what: str,
    error: type[DatabaseError] = DumpError,
) -> subprocess.Popen[bytes]:
    """Start a tool with stderr piped; a missing tool is a clear error."""
    return start_process(
        argv, env=env, cwd="/", stdin=stdin, stdout=stdout,
        cannot_run=_cannot_run(what, argv, error),
    )  # fmt: skip


def tool_failure(what: str, returncode: int, stderr: str, secrets: Iterable[str | None]) -> str:
    how = f"exit status {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"
    message = f"{what} failed ({how})"
    if stderr:
        message += ": " + redact_secrets(stderr, secrets)
    return message


@contextlib.contextmanager
def tool_output(
    argv: list[str],
    *,
    env: dict[str, str],
    what: str,
    secrets: Iterable[str | None],
    on_data: Callable[[memoryview], None] | None = None,
) -> Iterator[ProcessOutput]:
    """Run a dump tool and yield its stdout (`process.stream_process`). Leaving the block waits
    for the tool and raises DumpError (with its redacted stderr) if it failed or its output was
    not read to the end; if the block itself raises, the tool is killed and that exception
    propagates."""
    secrets = list(secrets)

    def check(end: ProcessExit) -> None:
        if end.returncode != 0:
            raise DumpError(tool_failure(what, end.returncode, end.stderr, secrets))
        if not end.read_to_end:
            raise DumpError(f"{what}: its output was not read to the end")

    with stream_process(
        argv, env=env, cwd="/", cannot_run=_cannot_run(what, argv, DumpError), check=check,
        on_data=on_data,
    ) as stream:  # fmt: skip
        yield stream


def run_tool(
    argv: list[str], *, env: dict[str, str], what: str, error: type[DatabaseError] = RestoreError
) -> tuple[int, str, str]:
    """Run a tool to completion: (exit status, stdout, the tail of stderr)."""
    proc = spawn(argv, env=env, what=what, error=error)
    tail = StderrTail(proc.stderr)
    assert proc.stdout is not None
    out = proc.stdout.read(1024 * 1024)
    with contextlib.suppress(OSError):
        proc.stdout.read()  # discard the rest
        proc.stdout.close()
    returncode = proc.wait()
    tail.join()
    return returncode, out.decode("utf-8", "replace"), tail.text()


def feed_tool(
    argv: list[str],
    *,
    env: dict[str, str],
    what: str,
    secrets: Iterable[str | None],
    write: Callable[[BinaryIO], object],
) -> str:
    """Run a tool and write its stdin with `write(stdin)` (no temp file). Returns the tail of
    its stderr; raises RestoreError (redacted) if it failed."""
    secrets = list(secrets)
    proc = spawn(argv, env=env, what=what, stdin=subprocess.PIPE,
                 stdout=subprocess.DEVNULL, error=RestoreError)  # fmt: skip
    tail = StderrTail(proc.stderr)
    assert proc.stdin is not None
    broken = False
    try:
        write(cast(BinaryIO, proc.stdin))
    except BrokenPipeError:
        broken = True  # the tool stopped reading: it failed, its stderr says why
    except BaseException:
        kill_process(proc)
        tail.join()
        raise
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    returncode = proc.wait()
    tail.join()
    if returncode != 0 or broken:
        raise RestoreError(tool_failure(what, returncode, tail.text(), secrets))
    return tail.text()


def tool_version(path: str) -> str:
    """`tool --version`'s first line ("" when it cannot run)."""
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = result.stdout.strip().splitlines()
    return lines[0] if lines else ""


def child_env(extra: dict[str, str], drop: Iterable[str] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in set(drop)}
    env.update(extra)
    return env


def format_count(count: int) -> str:
    return f"{count:,}"


def require_verified(report: RestoreReport) -> RestoreReport:
    """Raise RestoreVerificationError if a database restore's row counts did not match."""
    if report.details.get("verified") is False:
        problems = "; ".join(report.warnings[:10]) or "row counts differ from the backup"
        raise RestoreVerificationError(
            f"restore of {report.source} into {report.target} does not match the backup: {problems}"
        )
    return report


def refuse_live_targets(
    source: str,
    redacted_target: str,
    plan: list[tuple[str, str]],
    is_live: Callable[[str], bool],
    overwrite: bool,
) -> None:
    """Refuse a restore whose target database is the source's own live database (unless the
    caller confirmed a production restore and passes `overwrite`)."""
    for _, dst in plan:
        if not overwrite and is_live(dst):
            raise UsageError(
                f"database {dst} at {redacted_target} is the live database of source "
                f"{source}; restore into a new database",
                hint="give a target URL with a new database name",
            )


def compare_counts(
    expected: dict[str, int], restored: dict[str, int], label: str, report: RestoreReport
) -> tuple[dict[str, dict[str, int | None]], bool]:
    """Row counts after a restore against the manifest's: one summary line per table, a
    warning for each difference. Returns the per-table comparison and whether all match."""
    tables: dict[str, dict[str, int | None]] = {}
    verified = True
    for table, rows in sorted(expected.items()):
        got = restored.get(table)
        tables[table] = {"expected": rows, "restored": got}
        if got == rows:
            report.summary.append(f"{label}{table}: {format_count(rows)} rows (matches backup)")
            continue
        verified = False
        if got is None:
            line = f"{label}{table}: missing (backup had {format_count(rows)} rows)"
        else:
            line = f"{label}{table}: {format_count(got)} rows (backup had {format_count(rows)})"
        report.summary.append(line)
        report.warnings.append(line)
    return tables, verified


RestoreOne = Callable[[str, dict[str, Any], str, RestoreReport, bool], None]


def restore_databases(
    source: str,
    redacted_target: str,
    target_db: str | None,
    source_db: str | None,
    manifest: dict[str, Any],
    is_live: Callable[[str], bool],
    restore_one: RestoreOne,
    overwrite: bool,
) -> RestoreReport:
    """The restore driver both database sources share: which database goes where
    (restore_plan), the live-target refusal, one `restore_one(src, info, dst, report,
    several)` per database, then the totals and the time taken."""
    started = time.monotonic()
    databases: dict[str, dict[str, Any]] = manifest.get("databases") or {}
    plan = restore_plan(sorted(databases), target_db, source_db)
    refuse_live_targets(source, redacted_target, plan, is_live, overwrite)
    report = RestoreReport(source=source, target=redacted_target)
    report.details["databases"] = {}
    for src, dst in plan:
        restore_one(src, databases[src], dst, report, len(plan) > 1)
    summarize_databases(report)
    report.seconds = time.monotonic() - started
    report.details["seconds"] = round(report.seconds, 3)
    return report


def summarize_databases(report: RestoreReport) -> None:
    """Totals over the per-database details of a multi-database restore."""
    per_db = report.details["databases"].values()
    report.details["verified"] = all(d["verified"] for d in per_db)
    report.details["tables"] = sum(len(d["tables"]) for d in per_db)
    report.details["rows"] = sum(d["rows"] for d in per_db)
