"""The checks a plan asks a drill to run against the restored scratch environment:
SQL assertions, "uploads open", a smoke command, and an HTTP check of the app itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehold.drills.record import CheckResult
from safehold.plan.models import AnyCheck, CommandCheck, HTTPCheck, SQLCheck, UploadsCheck
from safehold.redaction import redact
from safehold.sources.dbquery import CheckQueryError, Database
from safehold.sources.scratch import free_port

_OUTPUT_TAIL = 300


@dataclass
class ScratchEnvironment:
    """What the checks can reach: restored databases and folders, and the variables a smoke
    command or the app gets (DATABASE_URL, SAFEHOLD_<SOURCE>_URL/_DIR/_PATH, UPLOADS_DIR)."""

    root: Path
    cwd: Path
    databases: dict[str, list[Database]] = field(default_factory=dict)  # per source
    folders: dict[str, list[Path]] = field(default_factory=dict)  # files sources
    production_folders: dict[str, list[Path]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)

    def database(self, source: str, name: str | None) -> Database:
        candidates = self.databases.get(source) or []
        if not candidates:
            raise CheckQueryError(f"source {source} was not restored, so it cannot be queried")
        if name is None:
            return candidates[0]
        for database in candidates:
            if database.label.endswith(f"/{name}"):
                return database
        names = ", ".join(d.label for d in candidates)
        raise CheckQueryError(f"source {source} has no restored database {name} (it has {names})")

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.variables)
        if extra:
            env.update(extra)
        return env


def run_check(check: AnyCheck, scratch: ScratchEnvironment) -> CheckResult:
    started = time.monotonic()
    try:
        if isinstance(check, SQLCheck):
            result = _sql(check, scratch)
        elif isinstance(check, UploadsCheck):
            result = _uploads(check, scratch)
        elif isinstance(check, CommandCheck):
            result = _command(check, scratch)
        else:
            result = _http(check, scratch)
    except CheckQueryError as err:
        result = CheckResult(check.label(), check.type, False, err.message)
    result.seconds = round(time.monotonic() - started, 3)
    return result


# ----- SQL ---------------------------------------------------------------------------------


def _compare(check: SQLCheck, value: Any) -> tuple[bool, str]:
    shown = f"got {value!r}"
    if check.equals is not None:
        same = value == check.equals or str(value) == str(check.equals)
        return same, f"{shown}, expected {check.equals!r}"
    if check.min is not None or check.max is not None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False, f"{shown}, expected a number"
        if check.min is not None and number < check.min:
            return False, f"{shown}, expected at least {check.min}"
        if check.max is not None and number > check.max:
            return False, f"{shown}, expected at most {check.max}"
        bounds = [f">= {check.min}" if check.min is not None else "",
                  f"<= {check.max}" if check.max is not None else ""]  # fmt: skip
        return True, f"{shown} ({' and '.join(b for b in bounds if b)})"
    return bool(value), f"{shown} (expected a true value)"


def _sql(check: SQLCheck, scratch: ScratchEnvironment) -> CheckResult:
    rows = scratch.database(check.source, check.database).query(check.query)
    if not rows:
        return CheckResult(check.label(), "sql", False, "the query returned no rows")
    ok, detail = _compare(check, rows[0][0])
    return CheckResult(check.label(), "sql", ok, detail)


# ----- uploads -------------------------------------------------------------------------------


def _relative_upload(raw: str, production: list[Path], folders: list[Path]) -> list[Path]:
    """Where a path stored by the app should be in the restored folders."""
    text = raw.strip()
    candidates = []
    path = Path(text)
    if path.is_absolute():
        for prod, restored in zip(production, folders, strict=False):
            with contextlib.suppress(ValueError):
                candidates.append(restored / path.relative_to(prod))
        text = text.lstrip("/")
    for restored in folders:
        candidates.append(restored / text)
        candidates.append(restored.parent / text)  # paths like "uploads/a.png"
    return candidates


def _uploads(check: UploadsCheck, scratch: ScratchEnvironment) -> CheckResult:
    folders = scratch.folders.get(check.files) or []
    if not folders:
        return CheckResult(
            check.label(), "uploads", False, f"files source {check.files} was not restored"
        )
    rows = scratch.database(check.source, check.database).query(check.query)
    paths = [str(row[0]) for row in rows if row and row[0] is not None and str(row[0]).strip()]
    if check.limit:
        paths = paths[: check.limit]
    if not paths:
        return CheckResult(check.label(), "uploads", True, "the query named no uploads",
                           warning=True)  # fmt: skip
    production = scratch.production_folders.get(check.files) or []
    missing = [
        p for p in paths if not any(c.is_file() for c in _relative_upload(p, production, folders))
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
        return CheckResult(
            check.label(), "uploads", False,
            f"{len(missing)} of {len(paths)} uploads named by the database are missing "
            f"from the restored files: {shown}",
        )  # fmt: skip
    return CheckResult(check.label(), "uploads", True, f"all {len(paths)} uploads present")


# ----- smoke command and HTTP ----------------------------------------------------------------


def _tail(output: bytes) -> str:
    text = redact(output.decode("utf-8", "replace").strip())
    lines = text.splitlines()
    last = lines[-1] if lines else ""
    return last if len(last) <= _OUTPUT_TAIL else "…" + last[-_OUTPUT_TAIL:]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _command(check: CommandCheck, scratch: ScratchEnvironment) -> CheckResult:
    timeout = check.timeout.total_seconds()
    process = subprocess.Popen(
        ["/bin/sh", "-c", check.command], cwd=scratch.cwd, env=scratch.child_env(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return CheckResult(check.label(), "command", False, f"timed out after {timeout:g}s")
    finally:
        _kill_group(process)
    if process.returncode != 0:
        tail = _tail(output)
        detail = f"exit code {process.returncode}" + (f": {tail}" if tail else "")
        return CheckResult(check.label(), "command", False, detail)
    return CheckResult(check.label(), "command", True, "exit code 0")


def _get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "safehold-drill"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read(1 << 20)
    except urllib.error.HTTPError as err:
        return int(err.code), err.read(1 << 20) if err.fp else b""


def _http(check: HTTPCheck, scratch: ScratchEnvironment) -> CheckResult:
    port = free_port()
    url = check.url.replace("{port}", str(port)).replace("${PORT}", str(port))
    process: subprocess.Popen[bytes] | None = None
    log_path = scratch.root / f"app-{port}.log"  # a file, not a pipe: a chatty app never blocks
    if check.command:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", check.command], cwd=scratch.cwd,
                env=scratch.child_env({"PORT": str(port)}), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    deadline = time.monotonic() + check.timeout.total_seconds()
    last = "no answer"
    try:
        while True:
            try:
                status, body = _get(url)
            except (OSError, urllib.error.URLError) as err:
                reason = getattr(err, "reason", err)
                last = f"no answer ({redact(str(reason))})"
            else:
                if status == check.status and (
                    check.contains is None or check.contains.encode() in body
                ):
                    return CheckResult(check.label(), "http", True, f"status {status}")
                last = f"status {status}, expected {check.status}"
                if status == check.status:
                    last = f"status {status}, but the body lacks {check.contains!r}"
            if process is not None and process.poll() is not None:
                tail = _tail(log_path.read_bytes())
                return CheckResult(
                    check.label(), "http", False,
                    f"the app exited with code {process.returncode} ({last})"
                    + (f": {tail}" if tail else ""),
                )  # fmt: skip
            if time.monotonic() > deadline:
                return CheckResult(
                    check.label(), "http", False, f"{last} after {check.timeout.total_seconds():g}s"
                )
            time.sleep(0.2)
    finally:
        if process is not None:
            _kill_group(process)
