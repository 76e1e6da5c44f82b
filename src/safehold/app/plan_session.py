"""From a plan file to the things commands work with: sources, the repository, its password."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from safehold.app.password import PasswordOptions, resolve_password
from safehold.app.session import kdf_from_environment
from safehold.backends import Backend, open_backend
from safehold.errors import PasswordSourceError, RepositoryNotFoundError
from safehold.plan import load_plan
from safehold.plan.models import (
    LocalDestination,
    Plan,
)
from safehold.redaction import register_secret
from safehold.repo.repository import Repository


def load_cli_plan(path: str | None, environ: Mapping[str, str] = os.environ) -> Plan:
    return load_plan(Path(path) if path else None, cwd=Path.cwd(), environ=environ)


def destination_password(
    destination: LocalDestination, environ: Mapping[str, str], *, confirm: bool = False
) -> bytes:
    if destination.password_file is not None:
        options = PasswordOptions(password_file=str(destination.password_file))
        return resolve_password(options, {}, confirm=confirm)
    if destination.password_command is not None:
        options = PasswordOptions(password_command=destination.password_command)
        return resolve_password(options, {}, confirm=confirm)
    variable = destination.password_env or "SAFEHOLD_PASSWORD"
    value = environ.get(variable)
    if value:
        register_secret(value)
        return value.encode("utf-8")
    raise PasswordSourceError(
        f"destination {destination.name}: the password variable {variable} is not set",
        hint=f"export {variable}=… (from your password manager), or set password_command in "
        "the plan",
    )


def destination_backend(destination: LocalDestination) -> Backend:
    """The destination's storage; an s3 destination with object_lock_days writes every object
    (but lock files) under that S3 Object Lock retention."""
    if destination.type == "s3" and destination.object_lock_days is not None:
        from safehold.backends.s3 import S3Backend

        mode = destination.object_lock_mode.upper()
        return S3Backend(
            destination.location(),
            lock_retention=(mode, destination.object_lock_days),  # type: ignore[arg-type]
        )
    return open_backend(destination.location())


def open_plan_repository(
    plan: Plan, destination_name: str | None = None, environ: Mapping[str, str] = os.environ
) -> Repository:
    destination = plan.destination(destination_name)
    backend = destination_backend(destination)
    if not backend.exists():
        raise RepositoryNotFoundError(
            f"destination {destination.name}: no repository at {backend.location}",
            hint="create it with `safehold init`",
        )
    return Repository.open(backend, destination_password(destination, environ))


def create_plan_repository(
    plan: Plan,
    password: bytes,
    environ: Mapping[str, str] = os.environ,
    destination: LocalDestination | None = None,
) -> Repository:
    """Create the repository of `destination` (default: the plan's first)."""
    backend = destination_backend(destination or plan.destination(None))
    return Repository.init(backend, password, kdf=kdf_from_environment(environ))
