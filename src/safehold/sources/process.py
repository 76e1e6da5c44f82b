"""The one subprocess streaming helper: run a tool, read its stdout as a backup stream, keep
the tail of its stderr, and fail loudly when it fails.

`stream_process` is the core used by the command source (`process_stream`) and the database
dump tools (`dbtools.tool_output`); `start_process`, `StderrTail` and `kill_process` are the
pieces the database restore helpers (`run_tool`, `feed_tool`) share with it. Secrets belong in
`env`, never in `argv`; error messages carry only redacted stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

from safehold.errors import SafeholdError

STDERR_LIMIT = 16 * 1024


class SourceError(SafeholdError):
    """A source could not be read (its tool failed, its file is missing, ...)."""


class StderrTail:
    """Reads a pipe on a thread until EOF, keeping only its last `limit` bytes."""

    def __init__(self, pipe: IO[bytes] | None, limit: int = STDERR_LIMIT) -> None:
        self._data = bytearray()
        self._limit = limit
        self._thread: threading.Thread | None = None
        if pipe is not None:
            self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
            self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536):
                self._data += chunk
                if len(self._data) > 2 * self._limit:
                    del self._data[: len(self._data) - self._limit]
        with contextlib.suppress(OSError):
            pipe.close()

    def join(self, timeout: float = 10) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def text(self) -> str:
        data = bytes(self._data[-self._limit :])
        return data.decode("utf-8", "replace").strip()


class ProcessOutput(io.RawIOBase):
    """A tool's stdout as a readable binary stream; counts the bytes and hands each piece to
    `on_data` (e.g. a row counter) as it passes."""

    def __init__(self, raw: IO[bytes], on_data: Callable[[memoryview], None] | None) -> None:
        super().__init__()
        self._raw = raw
        self._on_data = on_data
        self.size = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if not count:
            self.eof = True
            return 0
        self.size += count
        if self._on_data is not None:
            with memoryview(buffer) as view:
                self._on_data(view[:count])
        return int(count)


@dataclass(frozen=True)
class ProcessExit:
    """How a streamed tool ended: its status (negative: killed by that signal), the tail of its
    stderr (not yet redacted), whether the timeout killed it, and whether its stdout was read
    to the end."""

    returncode: int
    stderr: str
    timed_out: bool
    read_to_end: bool


def start_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    cannot_run: Callable[[OSError], SafeholdError],
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start a tool with stderr piped; a tool that cannot start raises `cannot_run(err)`."""
    try:
        return subprocess.Popen(
            list(argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None, cwd=cwd,
        )  # fmt: skip
    except OSError as err:
        raise cannot_run(err) from None


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill the tool if it still runs and reap it (waiting at most 30 s)."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@contextlib.contextmanager
def stream_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    cannot_run: Callable[[OSError], SafeholdError],
    check: Callable[[ProcessExit], None],
    timeout: float | None = None,
    drain: bool = False,
    on_data: Callable[[memoryview], None] | None = None,
) -> Iterator[ProcessOutput]:
    """Run `argv` and yield its stdout. If the block raises, the tool is killed and that
    exception propagates. Otherwise leaving the block reads what is left of stdout (`drain`)
    or closes it (the tool then dies of SIGPIPE if it still writes), waits for the tool and
    calls `check` with how it ended; `check` raises the caller's error. A `timeout` (seconds)
    kills the tool when it runs longer."""
    proc = start_process(argv, env=env, cwd=cwd, cannot_run=cannot_run)
    tail = StderrTail(proc.stderr)
    assert proc.stdout is not None
    stream = ProcessOutput(proc.stdout, on_data)
    timed_out = threading.Event()
    timer = None
    if timeout is not None:

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
    try:
        yield stream
        if drain:
            with contextlib.suppress(OSError, ValueError):
                while proc.stdout.read(65536):
                    pass
                stream.eof = True
    except BaseException:
        kill_process(proc)
        tail.join()
        raise
    finally:
        with contextlib.suppress(OSError):
            proc.stdout.close()
        if timer is not None:
            timer.cancel()
    returncode = proc.wait()
    tail.join()
    check(ProcessExit(returncode, tail.text(), timed_out.is_set(), stream.eof))


@contextlib.contextmanager
def process_stream(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    redact: Callable[[str], str] = lambda text: text,
) -> Iterator[BinaryIO]:
    """Run `argv`, yield its stdout; on leaving, raise SourceError if it failed or timed out
    (naming the last line of its stderr, redacted). A timeout kills the process."""

    def cannot_run(err: OSError) -> SafeholdError:
        return SourceError(
            f"{what}: cannot run {os.path.basename(argv[0])}: {err.strerror}",
            hint="check that the tool is installed and on PATH",
        )

    def check(end: ProcessExit) -> None:
        if end.timed_out:
            raise SourceError(f"{what}: timed out after {timeout:.0f} s", hint="raise its timeout")
        if end.returncode != 0:
            lines = end.stderr.splitlines()
            detail = redact(lines[-1]) if lines else ""
            raise SourceError(
                f"{what}: exited with status {end.returncode}" + (f": {detail}" if detail else ""),
                hint="run it by hand to see the whole error",
            )

    with stream_process(
        argv, env=env, cwd=cwd, cannot_run=cannot_run, check=check, timeout=timeout, drain=True
    ) as stream:
        yield stream  # type: ignore[misc]
