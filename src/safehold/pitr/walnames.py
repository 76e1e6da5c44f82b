"""PostgreSQL WAL file names, LSNs and segment headers.

A WAL segment is named `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the segment number split in
a "log id" and a "segment within that log id" (`segments_per_id = 2^32 / segment size`).
Besides segments an archive holds timeline history files (`TTTTTTTT.history`), backup history
files (`<segment>.XXXXXXXX.backup`) and, after a promotion, `<segment>.partial` files.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from safehold.errors import UsageError

_SEGMENT = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
_HISTORY = re.compile(r"([0-9A-F]{8})\.history")
_BACKUP = re.compile(r"([0-9A-F]{24})\.([0-9A-F]{8})\.backup")
_PARTIAL = re.compile(r"([0-9A-F]{24})\.partial")
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")

XLP_PAGE_MAGIC_MIN = 0xD000  # every supported major version's magic is 0xD0xx..0xD1xx
XLP_LONG_HEADER = 0x0002
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment: its timeline and its number (counted from the start of WAL)."""

    timeline: int
    number: int

    def name(self, segment_size: int) -> str:
        per_id = segments_per_id(segment_size)
        return f"{self.timeline:08X}{self.number // per_id:08X}{self.number % per_id:08X}"


@dataclass(frozen=True)
class WalName:
    """What an archived file name says: its kind, timeline, and (for segments) number."""

    name: str
    kind: str  # "segment" | "history" | "backup" | "partial"
    timeline: int
    log_id: int = 0
    seg_id: int = 0

    def number(self, segment_size: int) -> int:
        return self.log_id * segments_per_id(segment_size) + self.seg_id


def segments_per_id(segment_size: int) -> int:
    return 0x1_0000_0000 // segment_size


def parse_wal_name(name: str) -> WalName | None:
    """What `name` is, or None when it is not a file PostgreSQL archives."""
    found = _SEGMENT.fullmatch(name)
    if found:
        tli, log, seg = (int(part, 16) for part in found.groups())
        return WalName(name, "segment", tli, log, seg)
    found = _HISTORY.fullmatch(name)
    if found:
        return WalName(name, "history", int(found.group(1), 16))
    for pattern, kind in ((_BACKUP, "backup"), (_PARTIAL, "partial")):
        found = pattern.fullmatch(name)
        if found:
            base = _SEGMENT.fullmatch(found.group(1))
            assert base is not None
            tli, log, seg = (int(part, 16) for part in base.groups())
            return WalName(name, kind, tli, log, seg)
    return None


def require_wal_name(name: str) -> WalName:
    parsed = parse_wal_name(name)
    if parsed is None:
        raise UsageError(
            f"{name!r} is not a WAL file name",
            hint="archive_command passes the path as %p: safehold wal-push %p",
        )
    return parsed


def parse_lsn(text: str) -> int:
    """`0/16B3748` -> its 64-bit position; UsageError for anything else."""
    found = _LSN.fullmatch(text.strip())
    if not found:
        raise UsageError(f"{text!r} is not an LSN", hint="an LSN looks like 0/16B3748")
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of(timeline: int, lsn: int, segment_size: int) -> Segment:
    return Segment(timeline, lsn // segment_size)


@dataclass(frozen=True)
class SegmentHeader:
    """The long page header at the start of every segment."""

    timeline: int
    page_address: int
    system_identifier: int
    segment_size: int


def read_segment_header(head: bytes) -> SegmentHeader | None:
    """The header of a WAL segment from its first 40 bytes; None when it is not one."""
    if len(head) < 40:
        return None
    magic, info, tli, pageaddr = struct.unpack_from("<HHIQ", head, 0)
    sysid, seg_size = struct.unpack_from("<QI", head, 24)
    if magic < XLP_PAGE_MAGIC_MIN or not info & XLP_LONG_HEADER:
        return None
    if seg_size == 0 or seg_size & (seg_size - 1):
        return None
    return SegmentHeader(tli, pageaddr, sysid, seg_size)
