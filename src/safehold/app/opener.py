"""The one way in: where a repository is, where its password comes from, and opening or
creating it — for a location typed on the command line (-r/--repo, SAFEHOLD_REPOSITORY), a
plan destination, and a copy's source (--from-repo, SAFEHOLD_FROM_*).

Where the password comes from, one order everywhere (the first source found is the only one
tried: a missing file or a failing command is an error, never a fall-through):

1. what was given for THIS repository: --password-file, then --password-command (for a copy's
   source --from-password-file, --from-password-command); for a plan destination its one
   password_file, password_command or password_env key, if the plan gives one;
2. the environment: SAFEHOLD_PASSWORD_FILE, then SAFEHOLD_PASSWORD_COMMAND, then
   SAFEHOLD_PASSWORD (for a copy's source the SAFEHOLD_FROM_* ones; never the target's);
   A plan destination without a key ends here at the variable SAFEHOLD_PASSWORD, so `init`
   can generate that one when none is set;
3. a prompt, only when the caller can ask (cli/ passes one on a terminal; nothing here
   prompts or prints).

The environment: with a plan, the `.env` beside it under the process's own variables
(`plan_environment`), for hand-typed commands and scheduled jobs alike.

Every password found is registered for redaction; error messages name where the password was
expected to come from, never the password."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from safehold import plan as plan_files
from safehold.backends import Backend, open_backend
from safehold.backends.s3 import S3Backend
from safehold.errors import (
    PasswordSourceError,
    RepositoryNotFoundError,
    UsageError,
    WrongPasswordError,
)
from safehold.plan.errors import PlanError
from safehold.plan.locate import find_plan, plan_environment
from safehold.plan.logins import s3_login, sftp_login
from safehold.redaction import register_secret
from safehold.repo.indexcache import IndexCache
from safehold.repo.key import DEFAULT_KDF, KdfParams
from safehold.repo.repository import Repository

if TYPE_CHECKING:  # the plan's pydantic models load only when a plan is loaded
    from safehold.plan.models import LocalDestination, Plan

PasswordKind = Literal["file", "command", "variable", "prompt"]


@dataclass(frozen=True)
class PasswordSource:
    """One place a password comes from. `value` is the file's path, the command line, the
    variable's name or the prompt's text; `origin` says where this source was configured (a
    flag, a variable, a plan key) and `owner` what the password opens ("" for the repository
    typed on the command line) — both are named in every error, the password never."""

    kind: PasswordKind
    value: str
    origin: str
    owner: str = ""

    def describe(self) -> str:
        """Where the password comes from, in words (never the password)."""
        if self.kind == "file":
            return f"the password file {self.value} ({self.origin})"
        if self.kind == "command":
            return f"the password command ({self.origin})"
        if self.kind == "variable":
            return f"the variable {self.value} ({self.origin})"
        return "the prompt"


AskPassword = Callable[[str, bool], bytes]
"""(prompt text, confirm) -> the password typed; only cli/ makes one, on a terminal."""


@dataclass(frozen=True)
class RepositoryRole:
    """The names a repository given on the command line goes by: -r or a copy's --from-repo."""

    label: str  # "repository", "source repository"
    owner: str  # prefixed to messages ("" for -r: messages stay as restic users know them)
    location_flag: str
    flag_prefix: str  # --password-file / --from-password-file
    variable_prefix: str  # SAFEHOLD_PASSWORD / SAFEHOLD_FROM_PASSWORD

    @property
    def location_variable(self) -> str:
        return f"{self.variable_prefix}REPOSITORY"

    def password_hint(self) -> str:
        flag, variable = self.flag_prefix, self.variable_prefix
        return (
            f"give the {self.label}'s password with {flag}password-file, {flag}password-command, "
            f"{variable}PASSWORD, {variable}PASSWORD_FILE or {variable}PASSWORD_COMMAND"
        )


TYPED = RepositoryRole("repository", "", "-r/--repo", "--", "SAFEHOLD_")
COPY_SOURCE = RepositoryRole(
    "source repository", "source repository", "--from-repo", "--from-", "SAFEHOLD_FROM_"
)


@dataclass(frozen=True)
class RepositoryRequest:
    """What the command line says about one repository: its location and password flags."""

    location: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    role: RepositoryRole = TYPED


# ----- where the password comes from -------------------------------------------------------


def request_password_source(
    request: RepositoryRequest, environ: Mapping[str, str], *, can_ask: bool
) -> PasswordSource:
    """The first source in the one order (see the module docstring) for a typed repository or
    a copy's source. Raises PasswordSourceError when none is given and nobody can be asked."""
    role = request.role
    flag, prefix, owner = role.flag_prefix, role.variable_prefix, role.owner
    if request.password_file:
        return PasswordSource("file", request.password_file, f"{flag}password-file", owner)
    if request.password_command:
        return PasswordSource("command", request.password_command, f"{flag}password-command", owner)
    found = _environment_source(prefix, environ, owner)
    if found is not None:
        return found
    if not can_ask:
        raise PasswordSourceError(f"no {role.label} password given", hint=role.password_hint())
    return PasswordSource("prompt", f"enter password for the {role.label}: ", "a prompt", owner)


def _environment_source(
    prefix: str, environ: Mapping[str, str], owner: str
) -> PasswordSource | None:
    """Step 2 of the order: `PREFIX_PASSWORD_FILE`, then `_COMMAND`, then `PREFIX_PASSWORD`
    (an empty variable counts as unset)."""
    if environ.get(f"{prefix}PASSWORD_FILE"):
        path = environ[f"{prefix}PASSWORD_FILE"]
        return PasswordSource("file", path, f"{prefix}PASSWORD_FILE", owner)
    if environ.get(f"{prefix}PASSWORD_COMMAND"):
        command = environ[f"{prefix}PASSWORD_COMMAND"]
        return PasswordSource("command", command, f"{prefix}PASSWORD_COMMAND", owner)
    if environ.get(f"{prefix}PASSWORD"):
        return PasswordSource("variable", f"{prefix}PASSWORD", "the environment", owner)
    return None


def destination_password_source(
    destination: LocalDestination, environ: Mapping[str, str]
) -> PasswordSource:
    """A plan destination's source: the one key the plan gives it (password_file,
    password_command or password_env); without one, the environment in the same order as a
    typed command (SAFEHOLD_PASSWORD_FILE, _COMMAND, SAFEHOLD_PASSWORD), and when none of
    those is set, the variable SAFEHOLD_PASSWORD (whose absence is the error). A plan runs
    unattended: nothing asks."""
    owner = f"destination {destination.name}"
    if destination.password_file is not None:
        return PasswordSource("file", str(destination.password_file), "password_file", owner)
    if destination.password_command is not None:
        return PasswordSource("command", destination.password_command, "password_command", owner)
    if not destination.password_key_given:
        found = _environment_source(TYPED.variable_prefix, environ, owner)
        if found is not None:
            return found
    variable = destination.password_env or TYPED.variable_prefix + "PASSWORD"
    return PasswordSource("variable", variable, "password_env", owner)


def resolve_password(
    source: PasswordSource,
    environ: Mapping[str, str],
    *,
    ask: AskPassword | None = None,
    confirm: bool = False,
) -> bytes:
    """The password from `source`, registered for redaction so no output can contain it.
    Raises PasswordSourceError (one line naming the source, and a hint)."""
    try:
        password = _read_source(source, environ, ask, confirm)
    except PasswordSourceError as err:
        if not source.owner:
            raise
        raise PasswordSourceError(f"{source.owner}: {err.message}", hint=err.hint) from None
    register_secret(password)
    return password


def _read_source(
    source: PasswordSource, environ: Mapping[str, str], ask: AskPassword | None, confirm: bool
) -> bytes:
    if source.kind == "file":
        return _read_password_file(source)
    if source.kind == "command":
        return _run_password_command(source)
    if source.kind == "variable":
        return _read_variable(source, environ)
    if ask is None:
        raise PasswordSourceError("no password given and no terminal to ask on")
    password = ask(source.value, confirm)
    if not password:
        raise PasswordSourceError("an empty password is not allowed")
    return password


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def _read_password_file(source: PasswordSource) -> bytes:
    try:
        with open(source.value, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise PasswordSourceError(
            f"cannot read the password file {source.value} (from {source.origin}): {err.strerror}",
            hint=f"check {source.origin}",
        ) from None
    password = _strip_newline(raw)
    if not password:
        raise PasswordSourceError(
            f"the password file {source.value} (from {source.origin}) is empty",
            hint="write the password into it, on one line",
        )
    return password


def _run_password_command(source: PasswordSource) -> bytes:
    try:
        result = subprocess.run(
            shlex.split(source.value), capture_output=True, timeout=120, check=False
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        raise PasswordSourceError(
            f"the password command could not run ({type(err).__name__}; from {source.origin})",
            hint=f"check {source.origin}",
        ) from None
    if result.returncode != 0:
        raise PasswordSourceError(
            f"the password command exited with status {result.returncode} (from {source.origin})",
            hint="run it by hand to see why (is the password manager unlocked?)",
        )
    password = _strip_newline(result.stdout)
    if not password:
        raise PasswordSourceError(
            f"the password command printed nothing (from {source.origin})",
            hint="run it by hand: it must print the password on stdout",
        )
    return password


def _read_variable(source: PasswordSource, environ: Mapping[str, str]) -> bytes:
    value = environ.get(source.value)
    if not value:
        raise PasswordSourceError(
            f"the password variable {source.value} is not set",
            hint=f"export {source.value}=… (from your password manager) or put it in the .env "
            "beside the plan; or set password_command in the plan",
        )
    return value.encode("utf-8")


# ----- the environment ---------------------------------------------------------------------


def command_environment(plan_path: str | None, environ: Mapping[str, str]) -> Mapping[str, str]:
    """The environment a command looks its repository and password up in: with a plan (the
    one `load_cli_plan` finds), the `.env` beside it under `environ`; without one, `environ`."""
    try:
        file = find_plan(Path(plan_path) if plan_path else None, cwd=Path.cwd(), environ=environ)
    except PlanError:
        return environ  # no plan: a command that needs one says so when it loads it
    return plan_environment(file.parent, environ)


def load_cli_plan(
    path: str | None,
    environ: Mapping[str, str] = os.environ,
    only_sources: Collection[str] | None = None,
) -> Plan:
    """The plan a command names (--plan, SAFEHOLD_PLAN, ./safehold.toml); with `only_sources`
    only those sources are read, so their variables alone must be set. The loader (and the
    pydantic models under it) is reached through the plan package's names, which load on
    first use: a command given `-r` and no plan never pays for them."""
    return plan_files.load_plan(
        Path(path) if path else None, cwd=Path.cwd(), environ=environ, only_sources=only_sources
    )


def kdf_from_environment(environ: Mapping[str, str]) -> KdfParams:
    """SAFEHOLD_KDF_N lowers scrypt's cost for test suites only; never lower than 2^10."""
    value = environ.get("SAFEHOLD_KDF_N")
    if not value:
        return DEFAULT_KDF
    n = int(value)
    if n < 1024 or n & (n - 1):
        raise UsageError("SAFEHOLD_KDF_N must be a power of two >= 1024")
    return KdfParams(n=n, r=DEFAULT_KDF.r, p=DEFAULT_KDF.p)


# ----- opening -----------------------------------------------------------------------------


def repository_location(request: RepositoryRequest, environ: Mapping[str, str]) -> str:
    role = request.role
    location = request.location or environ.get(role.location_variable)
    if not location:
        raise UsageError(
            f"no {role.label} given",
            hint=f"pass {role.location_flag} LOCATION or set {role.location_variable}",
        )
    return location


def open_repository(
    request: RepositoryRequest,
    environ: Mapping[str, str] = os.environ,
    *,
    ask: AskPassword | None = None,
) -> Repository:
    """Open the repository typed on the command line (or a copy's source). Raises
    RepositoryNotFoundError before any password is asked for, PasswordSourceError,
    WrongPasswordError."""
    role = request.role
    backend = open_backend(repository_location(request, environ))
    if not backend.exists():
        hint = None if role is TYPED else f"check {role.location_flag}"
        raise RepositoryNotFoundError(f"no {role.label} at {backend.location}", hint=hint)
    source = request_password_source(request, environ, can_ask=ask is not None)
    return _open(backend, source, environ, ask)


def init_repository(
    request: RepositoryRequest,
    environ: Mapping[str, str] = os.environ,
    *,
    ask: AskPassword | None = None,
    chunker_polynomial: int | None = None,
) -> Repository:
    """Create the repository typed on the command line; a prompted password is confirmed.
    `chunker_polynomial` copies another repository's chunker parameter."""
    backend = open_backend(repository_location(request, environ))
    source = request_password_source(request, environ, can_ask=ask is not None)
    password = resolve_password(source, environ, ask=ask, confirm=True)
    return Repository.init(
        backend,
        password,
        kdf=kdf_from_environment(environ),
        chunker_polynomial=chunker_polynomial,
    )


def destination_backend(
    destination: LocalDestination, environ: Mapping[str, str] = os.environ
) -> Backend:
    """The destination's storage, signed in with the destination's own login (plan/logins.py:
    its keys or profile, region and endpoint on s3; its identity and known_hosts on sftp),
    else the process-wide ones. An s3 destination with object_lock_days writes every object
    (but lock files) under that S3 Object Lock retention."""
    if destination.type == "s3":
        lock = None
        if destination.object_lock_days is not None:
            mode = destination.object_lock_mode.upper()
            lock = (mode, destination.object_lock_days)
        return S3Backend(
            destination.location(),
            lock_retention=lock,  # type: ignore[arg-type]
            login=s3_login(destination),
        )
    if destination.type == "sftp":
        from safehold.backends.sftp import SftpBackend

        login = sftp_login(destination, environ)
        return SftpBackend(
            destination.location(), identity_file=login.identity, known_hosts=login.known_hosts
        )
    return open_backend(destination.location())


def open_destination(
    plan: Plan, destination_name: str | None = None, environ: Mapping[str, str] = os.environ
) -> Repository:
    """Open a plan destination (default: the first) with its own password, looked up in the
    plan's environment (`.env` beside the plan under `environ`)."""
    destination = plan.destination(destination_name)
    plan_environ = plan_environment(plan.base_dir, environ)
    backend = destination_backend(destination, plan_environ)
    if not backend.exists():
        raise RepositoryNotFoundError(
            f"destination {destination.name}: no repository at {backend.location}",
            hint="create it with `safehold init`",
        )
    source = destination_password_source(destination, plan_environ)
    return _open(backend, source, plan_environ, None)


def create_destination(
    destination: LocalDestination,
    password: bytes,
    environ: Mapping[str, str] = os.environ,
    *,
    chunker_polynomial: int | None = None,
) -> Repository:
    """Create the repository of a plan destination with `password` (and, when given, another
    destination's chunker polynomial, so copies between them deduplicate)."""
    backend = destination_backend(destination, environ)
    return Repository.init(
        backend,
        password,
        kdf=kdf_from_environment(environ),
        chunker_polynomial=chunker_polynomial,
    )


def _open(
    backend: Backend, source: PasswordSource, environ: Mapping[str, str], ask: AskPassword | None
) -> Repository:
    password = resolve_password(source, environ, ask=ask)
    try:
        repo = Repository.open(backend, password)
    except WrongPasswordError as err:
        prefix = f"{source.owner}: " if source.owner else ""
        raise WrongPasswordError(
            f"{prefix}{err.message}",
            hint=f"the password came from {source.describe()}: check it "
            "(`safehold key list` shows the keys of a repository you can open)",
        ) from None
    repo.index_cache = IndexCache.in_cache_dir(environ)  # the local index cache (indexcache.py)
    return repo
