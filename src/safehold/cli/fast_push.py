"""The fast path of `wal-push --async` (cli/entry.py recognises its command line): spool the
segment and acknowledge it with the spool's modules only (pitr/spoolfile.py), no CLI."""

from __future__ import annotations

import sys
from pathlib import Path

from safehold.errors import SafeholdError
from safehold.pitr.spoolfile import ACK_WORDS, DEFAULT_MAX_FILES, acknowledge


def fast_push(
    global_args: list[str], quiet: bool, spool: str, wal: str, max_files: int | None
) -> int:
    """Spool (or read ahead) one WAL segment and acknowledge it, as `wal-push --async` does."""
    path = Path(wal)
    try:
        outcome = acknowledge(
            Path(spool), path, global_args, DEFAULT_MAX_FILES if max_files is None else max_files
        )
    except SafeholdError as err:
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    if not quiet:
        print(f"{path.name}: {ACK_WORDS[outcome]}")
    return 0
