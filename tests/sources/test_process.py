"""The one subprocess streaming helper (sources/process.py), through both of its users'
wrappers: the command source's `process_stream` and the dump tools' `tool_output`."""

from __future__ import annotations

import os
import time

import pytest

from safehold.sources.dbtools import DumpError, tool_output
from safehold.sources.process import SourceError, process_stream


def _sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_stdout_streams_and_unread_output_is_drained() -> None:
    with process_stream(_sh("echo hello; seq 1 100000"), what="cmd") as stream:
        assert stream.read(6) == b"hello\n"  # the rest is drained, the tool exits 0


def test_failure_names_the_last_stderr_line_redacted() -> None:
    script = "echo first >&2; echo 'password hunter22 refused' >&2; exit 3"
    with (
        pytest.raises(SourceError, match=r"cmd: exited with status 3: password \*\*\* refused"),
        process_stream(_sh(script), what="cmd", redact=lambda t: t.replace("hunter22", "***")),
    ):
        pass


def test_timeout_kills_the_tool() -> None:
    begin = time.monotonic()
    with (
        pytest.raises(SourceError, match="timed out after 1 s"),
        process_stream(_sh("exec sleep 30"), what="cmd", timeout=1) as stream,
    ):
        stream.read()
    assert time.monotonic() - begin < 10


def test_a_tool_that_cannot_start() -> None:
    with (
        pytest.raises(SourceError, match="cannot run no-such-tool"),
        process_stream(["/nonexistent/no-such-tool"], what="cmd"),
    ):
        pass  # fmt: skip


def test_the_consumers_error_kills_the_tool_and_propagates() -> None:
    with (
        pytest.raises(KeyError),
        process_stream(_sh("printf '%010d' $$; exec sleep 30"), what="cmd") as out,
    ):
        pid = int(out.read(10))
        raise KeyError("consumer failed")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_tool_output_counts_and_requires_reading_to_the_end() -> None:
    seen: list[int] = []
    env = dict(os.environ)
    with tool_output(_sh("printf abcdef"), env=env, what="dump", secrets=[],
                     on_data=lambda view: seen.append(len(view))) as stream:  # fmt: skip
        assert stream.read() == b"abcdef"
    assert sum(seen) == 6 and stream.size == 6
    with (
        pytest.raises(DumpError, match=r"dump failed|not read to the end"),
        tool_output(_sh("seq 1 1000000"), env=env, what="dump", secrets=[]) as stream,
    ):
        stream.read(10)
    with (
        pytest.raises(DumpError, match=r"dump failed \(exit status 2\): bad \*\*\*"),
        tool_output(_sh("echo 'bad s3cret-pw' >&2; exit 2"), env=env, what="dump",
                    secrets=["s3cret-pw"]) as stream,
    ):  # fmt: skip
        stream.read()
