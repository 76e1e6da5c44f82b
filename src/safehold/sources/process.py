"""Reading a subprocess's stdout as a backup stream, and failing loudly when it fails."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from safehold.errors import SafeholdError

_STDERR_LIMIT = 16 * 1024


class SourceError(SafeholdError):
    """A source could not be read (its tool failed, its file is missing, ...)."""


def _collect(stream: BinaryIO, sink: bytearray) -> None:
    while chunk := stream.read(4096):
        if len(sink) < _STDERR_LIMIT:
            sink += chunk[: _STDERR_LIMIT - len(sink)]


@contextmanager
def process_stream(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    redact: Callable[[str], str] = lambda text: text,
) -> Iterator[BinaryIO]:
    """Run `argv`, yield its stdout; on leaving, raise SourceError if it failed or timed out.

    stderr is kept (bounded) for the error message, redacted. A timeout kills the process.
    Secrets belong in `env`, never in `argv`.
    """
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except OSError as err:
        raise SourceError(
            f"{what}: cannot run {os.path.basename(argv[0])}: {err.strerror}",
            hint="check that the tool is installed and on PATH",
        ) from None
    assert process.stdout is not None and process.stderr is not None
    stderr = bytearray()
    reader = threading.Thread(target=_collect, args=(process.stderr, stderr), daemon=True)
    reader.start()
    timed_out = threading.Event()
    timer = None
    if timeout is not None:

        def kill() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
    try:
        yield process.stdout  # type: ignore[misc]
        process.stdout.read()  # drain what the consumer did not read
    except BaseException:
        process.kill()
        raise
    finally:
        code = process.wait()
        if timer is not None:
            timer.cancel()
        reader.join(timeout=5)
        process.stdout.close()
        process.stderr.close()
    if timed_out.is_set():
        raise SourceError(f"{what}: timed out after {timeout:.0f} s", hint="raise its timeout")
    if code != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        detail = redact(lines[-1]) if lines else ""
        raise SourceError(
            f"{what}: exited with status {code}" + (f": {detail}" if detail else ""),
            hint="run it by hand to see the whole error",
        )
