"""Trees: one JSON blob per directory, `{"nodes": [...]}` sorted by name, plus a newline.

Node fields follow restic's Go struct (docs/format.md lists them). Names are Go-quoted (see
gotypes) so arbitrary bytes survive; link targets that are not valid UTF-8 are also stored raw
in `linktarget_raw` (base64). Unknown fields written by newer restic versions are kept as-is.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from safehold.repo.format import encode_json
from safehold.repo.gotypes import GoTime, format_time, go_quote, go_unquote, parse_time

NODE_TYPES = ("file", "dir", "symlink", "dev", "chardev", "fifo", "socket")
_KNOWN_FIELDS = {
    "name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode",
    "device_id", "size", "links", "linktarget", "linktarget_raw", "extended_attributes",
    "device", "content", "subtree",
}  # fmt: skip
_ZERO_TIME = GoTime(-62135596800 * 1_000_000_000)  # Go's zero time.Time, 0001-01-01T00:00:00Z


@dataclass
class Node:
    name: bytes
    type: str
    mode: int = 0
    mtime: GoTime = _ZERO_TIME
    atime: GoTime = _ZERO_TIME
    ctime: GoTime = _ZERO_TIME
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    inode: int = 0
    device_id: int = 0
    size: int = 0
    links: int = 0
    linktarget: bytes = b""
    device: int = 0
    content: list[str] | None = None
    subtree: str | None = None
    extended_attributes: list[tuple[str, bytes]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """The name as text: decoded UTF-8, or Go-quoted when it is not valid UTF-8."""
        try:
            return self.name.decode("utf-8")
        except UnicodeDecodeError:
            return go_quote(self.name)

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"name": go_quote(self.name), "type": self.type}
        if self.mode:
            value["mode"] = self.mode
        mtime = format_time(self.mtime)
        value["mtime"] = mtime
        value["atime"] = mtime if self.atime == self.mtime else format_time(self.atime)
        value["ctime"] = mtime if self.ctime == self.mtime else format_time(self.ctime)
        value["uid"] = self.uid
        value["gid"] = self.gid
        _put_if(value, "user", self.user)
        _put_if(value, "group", self.group)
        _put_if(value, "inode", self.inode)
        _put_if(value, "device_id", self.device_id)
        _put_if(value, "size", self.size)
        _put_if(value, "links", self.links)
        if self.linktarget:
            text = self.linktarget.decode("utf-8", errors="replace")
            value["linktarget"] = text
            if text.encode("utf-8") != self.linktarget:
                value["linktarget_raw"] = base64.b64encode(self.linktarget).decode("ascii")
        if self.extended_attributes:
            value["extended_attributes"] = [
                {"name": name, "value": base64.b64encode(data).decode("ascii")}
                for name, data in self.extended_attributes
            ]
        _put_if(value, "device", self.device)
        value["content"] = self.content
        if self.subtree is not None:
            value["subtree"] = self.subtree
        value.update(self.extra)
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Node:
        raw_target = value.get("linktarget_raw")
        if raw_target:
            linktarget = base64.b64decode(raw_target)
        else:
            linktarget = str(value.get("linktarget") or "").encode("utf-8", "surrogateescape")
        return cls(
            name=go_unquote(value["name"]),
            type=str(value["type"]),
            mode=int(value.get("mode") or 0),
            mtime=_time_or_zero(value.get("mtime")),
            atime=_time_or_zero(value.get("atime")),
            ctime=_time_or_zero(value.get("ctime")),
            uid=int(value.get("uid") or 0),
            gid=int(value.get("gid") or 0),
            user=str(value.get("user") or ""),
            group=str(value.get("group") or ""),
            inode=int(value.get("inode") or 0),
            device_id=int(value.get("device_id") or 0),
            size=int(value.get("size") or 0),
            links=int(value.get("links") or 0),
            linktarget=linktarget,
            device=int(value.get("device") or 0),
            content=list(value["content"]) if value.get("content") is not None else None,
            subtree=value.get("subtree"),
            extended_attributes=[
                (str(attr["name"]), base64.b64decode(attr.get("value") or ""))
                for attr in value.get("extended_attributes") or []
            ],
            extra={k: v for k, v in value.items() if k not in _KNOWN_FIELDS},
        )


def _put_if(target: dict[str, Any], key: str, value: object) -> None:
    if value:
        target[key] = value


def _time_or_zero(text: object) -> GoTime:
    return parse_time(text) if isinstance(text, str) and text else _ZERO_TIME


def encode_tree(nodes: list[Node]) -> bytes:
    """Serialise a directory; nodes are sorted by raw name, duplicates are a caller bug."""
    ordered = sorted(nodes, key=lambda node: node.name)
    for first, second in itertools.pairwise(ordered):
        if first.name == second.name:
            raise ValueError(f"duplicate name {first.display_name!r} in tree")
    return encode_json({"nodes": [node.to_json() for node in ordered]}) + b"\n"


def decode_tree(raw: bytes) -> list[Node]:
    value = json.loads(raw)
    return [Node.from_json(node) for node in value.get("nodes") or []]
