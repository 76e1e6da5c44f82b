"""Where the repository passphrase comes from: a file, a command (password manager), the
environment, or a prompt — in that order, as restic does. The passphrase is never logged."""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from safehold.errors import PasswordSourceError
from safehold.redaction import register_secret


@dataclass(frozen=True)
class PasswordOptions:
    password_file: str | None = None
    password_command: str | None = None


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def read_password_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise PasswordSourceError(
            f"cannot read the password file {path}: {err.strerror}",
            hint="check SAFEHOLD_PASSWORD_FILE / --password-file",
        ) from None
    password = _strip_newline(raw)
    if not password:
        raise PasswordSourceError(f"the password file {path} is empty")
    return password


def run_password_command(command: str) -> bytes:
    try:
        result = subprocess.run(shlex.split(command), capture_output=True, timeout=120, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        raise PasswordSourceError(
            f"the password command could not run ({type(err).__name__})",
            hint="check SAFEHOLD_PASSWORD_COMMAND / --password-command",
        ) from None
    if result.returncode != 0:
        raise PasswordSourceError(
            f"the password command exited with status {result.returncode}",
            hint="run it by hand to see why (is the password manager unlocked?)",
        )
    password = _strip_newline(result.stdout)
    if not password:
        raise PasswordSourceError("the password command printed nothing")
    return password


def resolve_password(
    options: PasswordOptions,
    environ: Mapping[str, str] = os.environ,
    *,
    confirm: bool = False,
    interactive: bool | None = None,
) -> bytes:
    """The passphrase from the first configured source; prompt only on a terminal.

    Whatever is found is registered for redaction, so no output can ever contain it."""
    password = _find_password(options, environ, confirm=confirm, interactive=interactive)
    register_secret(password)
    return password


def _find_password(
    options: PasswordOptions,
    environ: Mapping[str, str],
    *,
    confirm: bool,
    interactive: bool | None,
) -> bytes:
    file_path = options.password_file or environ.get("SAFEHOLD_PASSWORD_FILE")
    if file_path:
        return read_password_file(file_path)
    command = options.password_command or environ.get("SAFEHOLD_PASSWORD_COMMAND")
    if command:
        return run_password_command(command)
    value = environ.get("SAFEHOLD_PASSWORD")
    if value:
        return value.encode("utf-8")
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise PasswordSourceError("no repository password given")
    return prompt_password("enter password for repository: ", confirm=confirm)


def prompt_password(prompt: str, *, confirm: bool) -> bytes:
    first = getpass.getpass(prompt)
    if not first:
        raise PasswordSourceError("an empty password is not allowed")
    if confirm and getpass.getpass("enter password again: ") != first:
        raise PasswordSourceError("the passwords do not match", hint="run the command again")
    return first.encode("utf-8")
