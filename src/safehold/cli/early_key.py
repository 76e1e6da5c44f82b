"""Start the repository's key derivation before the CLI is imported.

Every command that opens a repository first derives the user key with scrypt (N=2^15, r=8,
p=3: ~0.3 CPU-s), and before that imports the CLI (~0.4 CPU-s). scrypt releases the GIL, so
the two can run side by side on two cores. `start` makes a cheap, conservative guess from the
command line and the environment, the same way `app/opener.py` would decide (a local
repository from -r/--repo or SAFEHOLD_REPOSITORY, a password from --password-file,
SAFEHOLD_PASSWORD_FILE or SAFEHOLD_PASSWORD), reads the key files and starts their
derivations in the background (repo/kdf.py `derive_early`). The real open later takes a result
only when its own password, salt and parameters are the same, so a wrong guess changes nothing
but the CPU it spent; anything unusual (a plan, a password command, a remote repository,
`init`, --help) makes no guess at all. Nothing here prints or fails.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from safehold.cli.argv import hoist_global_options
from safehold.repo.kdf import UnreadableKeyError, derive_early, kdf_fields, key_file_json

# global options that take a value (cli/main.py)
_VALUE_OPTIONS = {"-r", "--repo", "--password-file", "--password-command", "--plan",
                  "--progress-interval"}  # fmt: skip
_NO_REPOSITORY = {"init", "version", "plan", "schedule", "wal-push"}
_MAX_KEYS = 4  # a repository with more keys than this is not guessed at
_MAX_KEY_FILE = 64 * 1024


def _global_options(argv: Sequence[str]) -> tuple[dict[str, str], str] | None:
    """The global options before the command and the command's name; None when the line is
    not simple (an unknown option, --help, no command)."""
    options: dict[str, str] = {}
    rest = hoist_global_options(list(argv))  # as cli/main.py reads them
    while rest:
        word = rest.pop(0)
        if word in ("-q", "--quiet"):
            continue
        name, equals, value = word.partition("=")
        if name in _VALUE_OPTIONS:
            if not equals:
                if not rest:
                    return None
                value = rest.pop(0)
            options["--repo" if name == "-r" else name] = value
            continue
        if word.startswith("-"):
            return None
        if any(arg in ("-h", "--help") for arg in rest):
            return None
        return options, word
    return None


def _read_password_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_KEY_FILE)
    except OSError:
        return None
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw or None


def _password(options: Mapping[str, str], environ: Mapping[str, str]) -> bytes | None:
    """The password the opener would use, when it comes from a file or the environment."""
    if "--password-file" in options:
        return _read_password_file(options["--password-file"])
    if "--password-command" in options:
        return None
    if environ.get("SAFEHOLD_PASSWORD_FILE"):
        return _read_password_file(environ["SAFEHOLD_PASSWORD_FILE"])
    if environ.get("SAFEHOLD_PASSWORD_COMMAND"):
        return None
    password = environ.get("SAFEHOLD_PASSWORD")
    return password.encode("utf-8") if password else None


def _local_keys(location: str) -> str | None:
    if location.startswith("local:"):
        location = location[len("local:") :]
    elif ":" in location.split("/", 1)[0]:
        return None  # s3:, sftp:, ...
    keys = os.path.join(location, "keys")
    return keys if os.path.isdir(keys) else None


def start(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Start background derivations for the key files of the repository this command line
    opens; returns how many were started (0: no guess made)."""
    parsed = _global_options(argv)
    if parsed is None:
        return 0
    options, command = parsed
    if command in _NO_REPOSITORY or "--plan" in options or environ.get("SAFEHOLD_PLAN"):
        return 0
    location = options.get("--repo") or environ.get("SAFEHOLD_REPOSITORY")
    if not location or os.path.exists("safehold.toml"):
        return 0  # a plan in the working folder may decide the repository and password
    keys = _local_keys(location)
    if keys is None:
        return 0
    password = _password(options, environ)
    if password is None:
        return 0
    try:
        names = sorted(os.listdir(keys))
    except OSError:
        return 0
    if not names or len(names) > _MAX_KEYS:
        return 0
    started = 0
    for name in names:
        try:
            with open(os.path.join(keys, name), "rb") as handle:
                params, salt = kdf_fields(key_file_json(handle.read(_MAX_KEY_FILE)))
        except (OSError, UnreadableKeyError):
            continue
        try:
            derive_early(password, salt, params)
        except RuntimeError:  # no thread to be had: the open derives the key itself
            return started
        started += 1
    return started
