"""Turn a repository location string into a backend (restic's URL forms).

/path or local:/path                    a local folder
s3:https://host[:port]/bucket[/prefix]  S3-compatible storage (path-style); credentials from
                                        AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile
sftp:user@host:/path                    SFTP with key authentication; SAFEHOLD_SFTP_IDENTITY
sftp://user@host:port//path             and SAFEHOLD_SFTP_KNOWN_HOSTS override the defaults
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from safehold.backends.base import Backend
from safehold.backends.local import LocalBackend
from safehold.errors import UsageError


def object_lock_from(environ: Mapping[str, str]) -> tuple[Any, float] | None:
    """SAFEHOLD_S3_OBJECT_LOCK=governance:30 (or compliance:DAYS): write every object but locks
    with that S3 Object Lock retention. Unset: no retention."""
    value = environ.get("SAFEHOLD_S3_OBJECT_LOCK", "").strip()
    if not value:
        return None
    mode, _, days = value.partition(":")
    try:
        amount = float(days)
    except ValueError:
        amount = -1
    if mode.lower() not in ("governance", "compliance") or amount <= 0:
        raise UsageError(
            f"SAFEHOLD_S3_OBJECT_LOCK={value!r}: expected governance:DAYS or compliance:DAYS",
            hint="e.g. SAFEHOLD_S3_OBJECT_LOCK=governance:30",
        )
    return mode.upper(), amount


def open_backend(location: str) -> Backend:
    """Return the backend for `location` (see the module docstring for the forms)."""
    if location.startswith("local:"):
        return LocalBackend(location[len("local:") :])
    if location.startswith("sftp:"):
        # Key authentication only. SAFEHOLD_SFTP_IDENTITY: private key file (else the SSH agent
        # and ~/.ssh/id_*); SAFEHOLD_SFTP_KNOWN_HOSTS: known_hosts file (else ~/.ssh/known_hosts).
        from safehold.backends.sftp import SftpBackend

        return SftpBackend(
            location,
            identity_file=os.environ.get("SAFEHOLD_SFTP_IDENTITY") or None,
            known_hosts=os.environ.get("SAFEHOLD_SFTP_KNOWN_HOSTS") or None,
        )
    if location.startswith("s3:"):
        # Credentials: boto3's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE).
        from safehold.backends.s3 import S3Backend

        return S3Backend(location, lock_retention=object_lock_from(os.environ))
    for scheme in ("rest:", "b2:", "azure:", "gs:", "rclone:", "swift:"):
        if location.startswith(scheme):
            raise UsageError(
                f"repository location {scheme}… is not supported yet",
                hint="use a local folder, s3:… or sftp:…",
            )
    if not location:
        raise UsageError("no repository given", hint="pass -r PATH or set SAFEHOLD_REPOSITORY")
    return LocalBackend(location)
