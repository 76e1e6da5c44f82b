"""Opening a repository from command-line options and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from safehold.app.password import PasswordOptions, resolve_password
from safehold.backends import open_backend
from safehold.errors import UsageError
from safehold.repo.key import DEFAULT_KDF, KdfParams
from safehold.repo.repository import Repository


@dataclass(frozen=True)
class RepositoryOptions:
    location: str | None = None
    password: PasswordOptions = field(default_factory=PasswordOptions)


def repository_location(options: RepositoryOptions, environ: Mapping[str, str]) -> str:
    location = options.location or environ.get("SAFEHOLD_REPOSITORY")
    if not location:
        raise UsageError(
            "no repository given",
            hint="pass -r/--repo PATH or set SAFEHOLD_REPOSITORY",
        )
    return location


def kdf_from_environment(environ: Mapping[str, str]) -> KdfParams:
    """SAFEHOLD_KDF_N lowers scrypt's cost for test suites only; never lower than 2^10."""
    value = environ.get("SAFEHOLD_KDF_N")
    if not value:
        return DEFAULT_KDF
    n = int(value)
    if n < 1024 or n & (n - 1):
        raise UsageError("SAFEHOLD_KDF_N must be a power of two >= 1024")
    return KdfParams(n=n, r=DEFAULT_KDF.r, p=DEFAULT_KDF.p)


def open_repository(
    options: RepositoryOptions, environ: Mapping[str, str] = os.environ
) -> Repository:
    backend = open_backend(repository_location(options, environ))
    # Fail on a missing repository before asking for a password.
    if not backend.exists():
        from safehold.errors import RepositoryNotFoundError

        raise RepositoryNotFoundError(f"no repository at {backend.location}")
    password = resolve_password(options.password, environ)
    return Repository.open(backend, password)


def init_repository(
    options: RepositoryOptions, environ: Mapping[str, str] = os.environ
) -> Repository:
    backend = open_backend(repository_location(options, environ))
    password = resolve_password(options.password, environ, confirm=True)
    return Repository.init(backend, password, kdf=kdf_from_environment(environ))
