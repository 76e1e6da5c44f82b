"""Turn a repository location string into a backend (restic's URL forms)."""

from __future__ import annotations

from safehold.backends.base import Backend
from safehold.backends.local import LocalBackend
from safehold.errors import UsageError


def open_backend(location: str) -> Backend:
    """Return the backend for `location`: a path, `local:PATH`; s3/sftp come later."""
    if location.startswith("local:"):
        return LocalBackend(location[len("local:") :])
    for scheme in ("s3:", "sftp:", "rest:", "b2:", "azure:", "gs:", "rclone:", "swift:"):
        if location.startswith(scheme):
            raise UsageError(
                f"repository location {scheme}… is not supported yet",
                hint="use a local folder path for now",
            )
    if not location:
        raise UsageError("no repository given", hint="pass -r PATH or set SAFEHOLD_REPOSITORY")
    return LocalBackend(location)
