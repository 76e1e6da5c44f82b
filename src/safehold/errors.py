"""The one error hierarchy. Every error carries a user-facing message, a hint, and an exit code.

The CLI maps these to exit codes in one place (`safehold.cli.main`); core code raises them and
never prints. Messages must never contain secrets: callers pass redacted values.
"""

from __future__ import annotations


class ExitCode:
    """Documented process exit codes (restic's where restic has one)."""

    OK = 0
    ERROR = 1
    PARTIAL = 3
    UNSAFE = 4
    NO_REPOSITORY = 10
    LOCKED = 11
    WRONG_PASSWORD = 12
    INTERRUPTED = 130


class SafeholdError(Exception):
    """Base of every error safehold reports to a user."""

    exit_code: int = ExitCode.ERROR
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class UsageError(SafeholdError):
    """The user asked for something that cannot work as asked."""


class RepositoryNotFoundError(SafeholdError):
    exit_code = ExitCode.NO_REPOSITORY
    default_hint = "check -r/--repo or SAFEHOLD_REPOSITORY, or create one with `safehold init`"


class NotARepositoryError(SafeholdError):
    """Something is at the location, but it is not a repository safehold can read."""

    exit_code = ExitCode.NO_REPOSITORY
    default_hint = "point -r/--repo at a restic/safehold repository (format version 1 or 2)"


class RepositoryExistsError(SafeholdError):
    default_hint = "use the existing repository, or choose an empty location"


class WrongPasswordError(SafeholdError):
    exit_code = ExitCode.WRONG_PASSWORD
    default_hint = (
        "check SAFEHOLD_PASSWORD, SAFEHOLD_PASSWORD_FILE or SAFEHOLD_PASSWORD_COMMAND "
        "(`safehold key list` shows the keys of a repository you can open)"
    )


class UnreadableKeyFilesError(SafeholdError):
    """No key file of the repository could be parsed: no password was tried, so this is not
    a wrong password (exit 12 means the password matched no readable key)."""

    default_hint = (
        "the key files named above are damaged or not key files; copy keys/ back from another "
        "copy of the repository, or open it with a password whose key file is intact"
    )


class PasswordSourceError(SafeholdError):
    exit_code = ExitCode.WRONG_PASSWORD
    default_hint = (
        "set SAFEHOLD_PASSWORD, SAFEHOLD_PASSWORD_FILE=path or SAFEHOLD_PASSWORD_COMMAND='cmd'"
    )


class RepositoryLockedError(SafeholdError):
    exit_code = ExitCode.LOCKED
    default_hint = (
        "wait for the other process to finish; if it died, its lock goes stale after 30 "
        "minutes, or run `safehold unlock` when you are sure no process uses the repository"
    )


class LockLostError(RepositoryLockedError):
    """The lock this operation held could not be kept fresh (the storage refused new lock
    files until the deadline, or someone removed it): another host may now take it as stale,
    so the operation stopped before writing anything more."""

    default_hint = (
        "the operation stopped before its next write: earlier snapshots are intact and what it "
        "wrote is at most unreferenced data (`safehold prune` removes it); check that the "
        "storage is reachable and that no one runs `safehold unlock --remove-all` or "
        "`restic unlock --remove-all` while it works, then run the command again"
    )


class IntegrityError(SafeholdError):
    """An object failed authentication or its hash does not match its id."""

    default_hint = (
        "run `safehold check --read-data` to see everything affected; restore the other "
        "snapshots, or copy the object back from another destination"
    )


class DamagedIndexError(IntegrityError):
    """An index file cannot be read (its content does not match its name, authentication
    failed, or it does not parse): nothing that needs the index can trust it, so the command
    stopped. The index is derived data; `safehold repair index` rebuilds it from the packs."""

    exit_code = ExitCode.PARTIAL
    default_hint = (
        "run `safehold repair index` to rebuild the index from the pack headers (as "
        "`restic repair index` does), then run the command again"
    )


class MissingObjectError(SafeholdError):
    default_hint = (
        "run `safehold check` to see what it affects; other snapshots that do not use it "
        "still restore"
    )


class SnapshotNotFoundError(SafeholdError):
    default_hint = "list snapshots with `safehold snapshots`; name one by id, id prefix or `latest`"


class TargetNotEmptyError(SafeholdError):
    default_hint = "restore into a new, empty directory, or add --force to write into this one"


class BackendError(SafeholdError):
    """Storage failed: disk full, permission denied, I/O error."""


class DiskFullError(BackendError):
    default_hint = "free space on the destination (then run `safehold prune` to drop leftovers)"


class BackendPermissionError(BackendError):
    default_hint = "check the permissions of the repository folder for the user running safehold"


class InterruptedError_(SafeholdError):
    exit_code = ExitCode.INTERRUPTED
    default_hint = "the repository is intact; run the command again to finish"


class SafeholdWarning(UserWarning):
    """Something the user must know that did not stop the command (a damaged snapshot that a
    listing skipped). Core code issues it with `warnings.warn`; the CLI prints each message
    once on stderr, and the Python API leaves it to the `warnings` module."""
