"""The errors of point-in-time recovery (all SafeholdErrors: one line, a hint, an exit code)."""

from __future__ import annotations

from safehold.errors import SafeholdError


class PitrError(SafeholdError):
    """Point-in-time recovery cannot do what was asked."""


class WalConflictError(PitrError):
    """A WAL file of that name is already archived with other content."""

    default_hint = (
        "two servers (or a restored copy) archive into one repository under the same timeline: "
        "give each server its own repository, or check that the old server is really gone"
    )


class OutsideWindowError(PitrError):
    """The recovery target is outside the recoverable window."""

    default_hint = "pick a moment inside the window `safehold wal status` shows"


class SpoolFullError(PitrError):
    """The local spool holds too many segments: the pusher does not keep up or is not running."""

    default_hint = (
        "check that the pusher runs (`safehold wal-push --daemon`, or its log in the spool "
        "folder) and that the repository is reachable; PostgreSQL keeps the WAL and retries"
    )
