"""Tree blobs: restic's node JSON, byte-exact."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repo.format import encode_json
from safehold.repo.gotypes import GoTime, parse_time
from safehold.repo.tree import NODE_TYPES, Node, decode_tree, encode_tree

# Written by restic 0.14 for a file named b"bad\xffname".
RESTIC_TREE = (
    b'{"nodes":[{"name":"bad\\\\xffname","type":"file","mode":420,'
    b'"mtime":"2026-11-22T18:30:15.369454153Z","atime":"2026-11-22T18:30:15.369454153Z",'
    b'"ctime":"2026-11-22T18:30:15.369454153Z","uid":0,"gid":0,"user":"root","group":"root",'
    b'"inode":2146708,"device_id":65024,"size":1,"links":1,'
    b'"content":["2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"]}]}'
)


def test_restic_tree_decodes_and_reencodes_byte_for_byte() -> None:
    nodes = decode_tree(RESTIC_TREE)
    assert len(nodes) == 1
    node = nodes[0]
    assert node.name == b"bad\xffname"
    assert node.type == "file"
    assert node.mode == 0o644
    assert node.mtime == parse_time("2026-11-22T18:30:15.369454153Z")
    assert node.mtime.ns % 1_000_000_000 == 369454153
    assert (node.uid, node.gid, node.user, node.group) == (0, 0, "root", "root")
    assert (node.inode, node.device_id, node.size, node.links) == (2146708, 65024, 1, 1)
    assert node.content == ["2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"]
    assert node.subtree is None
    assert node.extra == {}
    assert encode_tree(nodes) == RESTIC_TREE + b"\n"


# restic-shaped directory and symlink nodes (field order of restic's Node struct, content null).
RESTIC_DIR_AND_LINK = (
    b'{"nodes":[{"name":"dir","type":"dir","mode":2147484141,'
    b'"mtime":"2024-01-02T03:04:05.123+01:00","atime":"2024-01-02T03:04:05.123+01:00",'
    b'"ctime":"2024-01-02T03:04:05.123+01:00","uid":1000,"gid":1000,"user":"ann",'
    b'"group":"ann","inode":42,"device_id":2049,"content":null,'
    b'"subtree":"8e3d7bc0b2c1d1f5e8e3b1f0b6f7e2d5a2c3b4d5e6f708192a3b4c5d6e7f8091"},'
    b'{"name":"link","type":"symlink","mode":134218239,'
    b'"mtime":"2024-01-02T03:04:05Z","atime":"2024-01-02T03:04:05Z",'
    b'"ctime":"2024-01-02T03:04:05Z","uid":1000,"gid":1000,"inode":43,"links":1,'
    b'"linktarget":"../target","content":null}]}'
)


def test_restic_dir_and_symlink_nodes_round_trip() -> None:
    nodes = decode_tree(RESTIC_DIR_AND_LINK)
    directory, link = nodes
    assert directory.type == "dir"
    assert directory.content is None
    assert directory.subtree is not None and directory.subtree.startswith("8e3d")
    assert directory.mtime.offset == 3600
    assert link.linktarget == b"../target"
    assert link.user == ""
    assert encode_tree(nodes) == RESTIC_DIR_AND_LINK + b"\n"


def test_invalid_utf8_link_target_uses_linktarget_raw() -> None:
    node = Node(name=b"l", type="symlink", linktarget=b"to/\xff\xfe/x", content=None)
    value = node.to_json()
    assert value["linktarget"] == "to/\ufffd\ufffd/x"
    assert base64.b64decode(value["linktarget_raw"]) == b"to/\xff\xfe/x"
    assert Node.from_json(json.loads(encode_json(value))).linktarget == b"to/\xff\xfe/x"

    valid = Node(name=b"l", type="symlink", linktarget="ziel/é".encode(), content=None)
    assert "linktarget_raw" not in valid.to_json()
    assert valid.to_json()["linktarget"] == "ziel/é"


def test_linktarget_raw_from_restic_wins() -> None:
    value = {
        "name": "l", "type": "symlink", "mtime": "2024-01-02T03:04:05Z",
        "linktarget": "a\ufffdb", "linktarget_raw": base64.b64encode(b"a\x80b").decode(),
        "content": None,
    }  # fmt: skip
    assert Node.from_json(value).linktarget == b"a\x80b"


def test_extended_attributes_and_unknown_fields_are_kept() -> None:
    raw = (
        b'{"nodes":[{"name":"f","type":"file","mtime":"2024-01-02T03:04:05Z",'
        b'"atime":"2024-01-02T03:04:05Z","ctime":"2024-01-02T03:04:05Z","uid":0,"gid":0,'
        b'"extended_attributes":[{"name":"user.comment","value":"aGVsbG8A/w=="}],'
        b'"content":[],"generic_attributes":{"windows.creation_time":"AAAA"},'
        b'"error":"partial read"}]}'
    )
    (node,) = decode_tree(raw)
    assert node.extended_attributes == [("user.comment", b"hello\x00\xff")]
    assert node.extra == {"generic_attributes": {"windows.creation_time": "AAAA"},
                          "error": "partial read"}  # fmt: skip
    assert node.content == []
    again = decode_tree(encode_tree([node]))[0]
    assert again == node


def test_zero_times_and_missing_fields() -> None:
    (node,) = decode_tree(b'{"nodes":[{"name":"x","type":"fifo","content":null}]}')
    assert node.mtime == GoTime(-62135596800 * 1_000_000_000)
    value = node.to_json()
    assert value["mtime"] == "0001-01-01T00:00:00Z"
    assert "mode" not in value and "size" not in value and "user" not in value
    assert value["uid"] == 0 and value["gid"] == 0
    assert decode_tree(b'{"nodes":null}') == []


def test_encode_tree_sorts_by_raw_name_bytes() -> None:
    names = [b"b", b"\xff", "é".encode(), b"B", b"a", b"a\n", b"a b"]
    tree = encode_tree([Node(name=name, type="file", content=[]) for name in names])
    assert tree.endswith(b"}\n")
    assert tree.count(b"\n") == 1
    decoded = [node.name for node in decode_tree(tree)]
    # \xff sorts last as a byte, though its quoted form "\\xff" would sort before letters
    assert decoded == [b"B", b"a", b"a\n", b"a b", b"b", b"\xc3\xa9", b"\xff"]


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        encode_tree([Node(name=b"same", type="file"), Node(name=b"other", type="dir"),
                     Node(name=b"same", type="dir")])  # fmt: skip


def test_empty_tree() -> None:
    assert encode_tree([]) == b'{"nodes":[]}\n'
    assert decode_tree(b'{"nodes":[]}\n') == []


# ----- property: any node survives JSON --------------------------------------------------------

hex_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
go_times = st.builds(
    GoTime,
    st.integers(min_value=-62135596800 * 10**9, max_value=253402300799 * 10**9),
    st.just(0),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip
known_fields = {
    "name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode",
    "device_id", "size", "links", "linktarget", "linktarget_raw", "extended_attributes",
    "device", "content", "subtree",
}  # fmt: skip
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda key: key not in known_fields),
    json_values,
    max_size=3,
)
nodes = st.builds(
    Node,
    name=st.binary(min_size=1, max_size=40),
    type=st.sampled_from(NODE_TYPES),
    mode=st.integers(0, 2**32 - 1),
    mtime=go_times,
    atime=go_times,
    ctime=go_times,
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    user=st.text(max_size=8),
    group=st.text(max_size=8),
    inode=st.integers(0, 2**64 - 1),
    device_id=st.integers(0, 2**64 - 1),
    size=st.integers(0, 2**64 - 1),
    links=st.integers(0, 2**32),
    linktarget=st.binary(max_size=30),
    device=st.integers(0, 2**64 - 1),
    content=st.none() | st.lists(hex_ids, max_size=3),
    subtree=st.none() | hex_ids,
    extended_attributes=st.lists(st.tuples(st.text(min_size=1, max_size=10),
                                           st.binary(max_size=20)), max_size=3),
    extra=extra_fields,
)  # fmt: skip


@settings(deadline=None)
@given(nodes)
def test_node_json_round_trip(node: Node) -> None:
    encoded = encode_json(node.to_json())
    encoded.decode("utf-8")  # valid UTF-8 whatever the name bytes
    assert Node.from_json(json.loads(encoded)) == node


@settings(deadline=None, max_examples=40)
@given(st.lists(nodes, max_size=6, unique_by=lambda node: node.name))
def test_tree_round_trip(tree_nodes: list[Node]) -> None:
    encoded = encode_tree(tree_nodes)
    decoded = decode_tree(encoded)
    assert decoded == sorted(tree_nodes, key=lambda node: node.name)
    assert encode_tree(decoded) == encoded
