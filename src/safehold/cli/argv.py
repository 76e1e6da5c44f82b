"""The global options' place on the command line (cheap to import: cli/early_key.py reads
the command line before the CLI is loaded)."""

from __future__ import annotations

_GLOBAL_FLAGS = {"-q", "--quiet"}
_GLOBAL_WITH_VALUE = {
    "-r", "--repo", "--password-file", "--password-command", "--plan", "--progress-interval",
}  # fmt: skip


# click matches every option as a long one first; a short one (`-r`) fails that match, and
# the failure builds a "no such option" error with suggestions, importing difflib (~10 ms of
# every command's start-up). The global short options are written long before click sees them.
_LONG_NAMES = {"-r": "--repo", "-q": "--quiet"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Accept global options after the command name too (`safehold backup DIR -q`), as restic
    does: they are moved before the command, short names written long (`-r` as `--repo`).
    Nothing after `--` is touched."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        name = arg.split("=", 1)[0]
        if arg in _GLOBAL_FLAGS:
            front.append(_LONG_NAMES.get(arg, arg))
        elif name in _GLOBAL_WITH_VALUE and "=" in arg:
            front.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and index + 1 < len(argv):
            front.extend((_LONG_NAMES.get(arg, arg), argv[index + 1]))
            index += 1
        else:
            rest.append(arg)
        index += 1
    return front + rest
