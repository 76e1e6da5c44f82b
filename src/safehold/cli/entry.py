"""The `safehold` program's entry point, with one fast path: `wal-push --async`.

PostgreSQL runs archive_command once per WAL segment, so its start-up cost is paid per 16 MB.
The whole CLI takes a second or more to import; `wal-push --async --spool DIR %p` needs only
the spool (pitr/spoolfile.py: the standard library and the WAL name rules). This module
recognises exactly that command line (global options --plan, -r/--repo, --password-file,
--password-command, -q before it; --spool, --max-spool after it) and hands it to
cli/fast_push.py without loading the CLI; anything else, --help included, goes to the full CLI
(cli/main.py), which handles `wal-push --async` the same way.

Nothing but the standard library loads here before a command's key derivation starts
(cli/early_key.py): the spool's modules load only for the fast path, the CLI only after it.
"""

from __future__ import annotations

import importlib
import os
import sys

SPOOL_ENV = "SAFEHOLD_WAL_SPOOL"
_GLOBAL_VALUE = {"--plan", "-r", "--repo", "--password-file", "--password-command"}


def parse_fast_push(argv: list[str]) -> tuple[list[str], bool, str, str, int | None] | None:
    """(global args, quiet, spool, WAL path, max files or None for the default) when `argv`
    is a plain `wal-push --async` command line; None for anything else."""
    global_args: list[str] = []
    quiet = False
    rest = list(argv)
    while rest and rest[0] != "wal-push":
        option = rest.pop(0)
        if option in ("-q", "--quiet"):
            quiet = True
        elif option in _GLOBAL_VALUE and rest:
            value = rest.pop(0)
            global_args += [option, os.path.abspath(value) if option == "--plan" else value]
        else:
            return None
    if not rest:
        return None
    rest.pop(0)
    spool = os.environ.get(SPOOL_ENV)
    max_files: int | None = None
    is_async = False
    paths: list[str] = []
    while rest:
        option = rest.pop(0)
        if option == "--async":
            is_async = True
        elif option == "--spool" and rest:
            spool = rest.pop(0)
        elif option == "--max-spool" and rest and rest[0].isdigit():
            max_files = int(rest.pop(0))
        elif option.startswith("-"):
            return None
        else:
            paths.append(option)
    if not is_async or not spool or len(paths) != 1:
        return None
    return global_args, quiet, spool, paths[0], max_files


def run() -> None:
    fast = parse_fast_push(sys.argv[1:])
    if fast is not None:
        sys.exit(importlib.import_module("safehold.cli.fast_push").fast_push(*fast))
    # The repository's scrypt key derivation starts first, on another thread, and runs while
    # the full CLI is imported (cli/early_key.py); both are loaded only here, so that the
    # fast path above stays cheap.
    importlib.import_module("safehold.cli.early_key").start(sys.argv[1:], os.environ)
    importlib.import_module("safehold.cli.main").run()
