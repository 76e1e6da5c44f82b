"""Decode the parent snapshot's trees in a forked process while a backup walks the disk.

A re-backup compares every directory with its tree in the parent snapshot. Loading one tree
(read, MAC check, decrypt, decompress, SHA-256) costs ~0.1 ms of CPU, about a third of the
walk of an unchanged tree, and it holds the GIL as the walk does (the blobs are too small for
the crypto to release it), so a thread cannot overlap the two. A forked child can: it walks
the parent's trees depth first, in the order the backup's walk meets them (sorted names, a
folder's subfolders as they come), and writes each tree's plaintext into a pipe; the walk
takes them from there, parsing only the JSON.

The child only reads (the repository's packs and the index as they were at the fork), holds
no lock of its own and dies with the thread that forked it. Anything the stream does not
deliver in order (a folder the walk skips, a tree the child could not load, the child gone)
is loaded here the usual way, so the stream changes the speed of a backup, never its result.
"""

from __future__ import annotations

import fcntl
import gc
import os
import re
import signal
import struct
import sys
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, BinaryIO

from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.runtime import kill_when_parent_dies

_HEADER = struct.Struct(">32sI")  # tree id (raw), plaintext length
_FAILED = 0xFFFFFFFF  # length of a tree the child could not load
_PIPE_SIZE = 1 << 20  # the child runs this far ahead of the walk (Linux: F_SETPIPE_SZ)
_AHEAD_BYTES = 32 << 20  # trees read past the wanted one, kept for later (bounded)
_SCAN_LIMIT = 4096  # trees read past in one look-up before loading it here instead
_DECODED_IN_CHILD = 256  # the child's cache of trees that occur more than once
# a subtree id as restic and safehold write tree JSON (compact); other spacing only means
# the child sends fewer trees and the walk loads the rest itself
_SUBTREE = re.compile(rb'"subtree":"([0-9a-f]{64})"')


def prefetch_supported(repo: Repository) -> bool:
    """Local storage on Linux: a forked child reads packs with its own file handles. Remote
    backends' sessions and connections are not for two processes to share."""
    return sys.platform.startswith("linux") and repo.backend.capabilities.local_path is not None


class TreeStream:
    """The parent's trees, decoded ahead by a forked child (see the module docstring)."""

    def __init__(self, repo: Repository, pid: int, reader: BinaryIO) -> None:
        self._repo = repo
        self._pid: int | None = pid
        self._reader: BinaryIO | None = reader
        self._ahead: OrderedDict[str, bytes | None] = OrderedDict()  # read past, not yet used
        self._ahead_bytes = 0

    @classmethod
    def start(cls, repo: Repository, root: list[dict[str, Any]]) -> TreeStream | None:
        """Fork the child for the subtrees of the parent's root tree (its nodes `root`);
        None where that cannot be done (the caller loads every tree itself)."""
        if not prefetch_supported(repo):
            return None
        try:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            return None
        if pid == 0:  # pragma: no cover - the child (covered through the stream it writes)
            code = 1
            try:
                os.close(read_end)
                code = _child(repo, root, write_end, os.getppid())
            finally:
                os._exit(code)
        os.close(write_end)
        return cls(repo, pid, os.fdopen(read_end, "rb", buffering=256 * 1024))

    @property
    def pid(self) -> int | None:
        """The child's process id (None once reaped)."""
        return self._pid

    @property
    def read_past(self) -> int:
        """Trees read past a wanted one and kept for later."""
        return len(self._ahead)

    def load(self, tree_id: str) -> bytes | None:
        """The plaintext of tree `tree_id` from the stream (verified by the child); None when
        the stream does not bring it in time (a tree the walk asks for out of order, one the
        child could not load, the child gone): the caller loads it itself."""
        if tree_id in self._ahead:
            data = self._ahead.pop(tree_id)
            self._ahead_bytes -= len(data or b"")
            return data
        for _ in range(_SCAN_LIMIT):
            got = self._next()
            if got is None:
                return None
            got_id, data = got
            if got_id == tree_id:
                return data
            self._keep_ahead(got_id, data)
        return None

    def close(self) -> None:
        """Stop and reap the child (it may be blocked writing ahead of a walk that ended)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._pid is not None:
            with suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            with suppress(ChildProcessError):  # already reaped by someone else
                os.waitpid(self._pid, 0)
            self._pid = None
        self._ahead.clear()
        self._ahead_bytes = 0

    def _next(self) -> tuple[str, bytes | None] | None:
        """The next tree of the stream; None at its end (the child finished, or failed)."""
        if self._reader is None:
            return None
        try:
            header = self._reader.read(_HEADER.size)
            if len(header) == _HEADER.size:
                raw_id, length = _HEADER.unpack(header)
                if length == _FAILED:
                    return raw_id.hex(), None
                data = self._reader.read(length)
                if len(data) == length:
                    return raw_id.hex(), data
        except OSError:
            pass
        self._reader.close()  # the end: every later tree is loaded here
        self._reader = None
        return None

    def _keep_ahead(self, tree_id: str, data: bytes | None) -> None:
        if tree_id in self._ahead:
            return  # the same tree twice (identical folders): one copy serves both
        self._ahead[tree_id] = data
        self._ahead_bytes += len(data or b"")
        while self._ahead_bytes > _AHEAD_BYTES and self._ahead:
            _, dropped = self._ahead.popitem(last=False)  # the oldest: the walk went past it
            self._ahead_bytes -= len(dropped or b"")


def _child(repo: Repository, root: list[dict[str, Any]], fd: int, parent: int) -> int:
    """The forked side: write every subtree under `root`, depth first, then exit."""
    if not kill_when_parent_dies() or os.getppid() != parent:
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the backup decides how to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.disable()  # short-lived: a collection would only copy the parent's pages
    repo.detach_forked_copy()
    with suppress(OSError):  # else the default pipe size (64 KiB): the child runs less ahead
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    with os.fdopen(fd, "wb", buffering=64 * 1024) as out:
        decoded: OrderedDict[str, tuple[bytes | None, list[str]]] = OrderedDict()
        stack = [_subtrees(root)]
        try:
            while stack:
                tree_id = next(stack[-1], None)
                if tree_id is None:
                    stack.pop()
                    continue
                try:
                    raw_id = bytes.fromhex(tree_id)
                except (TypeError, ValueError):
                    continue  # not an id: the walk finds no tree there either
                data, children = _decode(repo, tree_id, decoded)
                out.write(_HEADER.pack(raw_id, _FAILED if data is None else len(data)))
                if data is not None:
                    out.write(data)
                if children:
                    stack.append(iter(children))
        except BrokenPipeError:
            return 0  # the walk is over
    return 0


def _subtrees(nodes: list[dict[str, Any]]) -> Iterator[str]:
    return iter([n["subtree"] for n in nodes if n.get("type") == "dir" and n.get("subtree")])


def _decode(
    repo: Repository, tree_id: str, decoded: OrderedDict[str, tuple[bytes | None, list[str]]]
) -> tuple[bytes | None, list[str]]:
    """A tree's plaintext and its subtree ids (None, []: unreadable); repeated trees once."""
    cached = decoded.get(tree_id)
    if cached is not None:
        decoded.move_to_end(tree_id)
        return cached
    try:
        data = repo.load_blob(tree_id, BlobType.TREE)
        # the subtree ids, in node order, without parsing the JSON (the walk parses it): in
        # a JSON string a quote is escaped, so this finds the key and nothing else
        children = [found.decode("ascii") for found in _SUBTREE.findall(data)]
        result: tuple[bytes | None, list[str]] = (data, children)
    except Exception:  # the walk loads it itself and sees what is wrong with it
        result = (None, [])
    decoded[tree_id] = result
    if len(decoded) > _DECODED_IN_CHILD:
        decoded.popitem(last=False)
    return result
