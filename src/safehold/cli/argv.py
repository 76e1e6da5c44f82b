"""The global options' place on the command line (cheap to import: cli/early_key.py reads
the command line before the CLI is loaded)."""

from __future__ import annotations

_GLOBAL_FLAGS = {"-q", "--quiet"}
_GLOBAL_WITH_VALUE = {
    "-r", "--repo", "--password-file", "--password-command", "--plan", "--progress-interval",
}  # fmt: skip


def hoist_global_options(argv: list[str]) -> list[str]:
    """Accept global options after the command name too (`safehold backup DIR -q`), as restic
    does: they are moved before the command. Nothing after `--` is touched."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS or (name in _GLOBAL_WITH_VALUE and "=" in arg):
            front.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and index + 1 < len(argv):
            front.extend(argv[index : index + 2])
            index += 1
        else:
            rest.append(arg)
        index += 1
    return front + rest
