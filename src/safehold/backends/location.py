"""Turn a repository location string into a backend (restic's URL forms)."""

from __future__ import annotations

from safehold.backends.base import Backend
from safehold.backends.local import LocalBackend
from safehold.errors import UsageError


def open_backend(location: str) -> Backend:
    """Return the backend for `location`: a path, `local:PATH`; s3/sftp come later."""
    if location.startswith("local:"):
        return LocalBackend(location[len("local:") :])
    if location.startswith("sftp:"):
        # Key authentication only. SAFEHOLD_SFTP_IDENTITY: private key file (else the SSH agent
        # and ~/.ssh/id_*); SAFEHOLD_SFTP_KNOWN_HOSTS: known_hosts file (else ~/.ssh/known_hosts).
        import os

        from safehold.backends.sftp import SftpBackend

        return SftpBackend(
            location,
            identity_file=os.environ.get("SAFEHOLD_SFTP_IDENTITY") or None,
            known_hosts=os.environ.get("SAFEHOLD_SFTP_KNOWN_HOSTS") or None,
        )
    if location.startswith("s3:"):
        # Credentials: boto3's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE).
        from safehold.backends.s3 import S3Backend

        return S3Backend(location)
    for scheme in ("rest:", "b2:", "azure:", "gs:", "rclone:", "swift:"):
        if location.startswith(scheme):
            raise UsageError(
                f"repository location {scheme}… is not supported yet",
                hint="use a local folder path for now",
            )
    if not location:
        raise UsageError("no repository given", hint="pass -r PATH or set SAFEHOLD_REPOSITORY")
    return LocalBackend(location)
