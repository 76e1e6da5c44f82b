"""Filesystem metadata <-> tree nodes: what a node records, and putting it back on restore."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from functools import lru_cache
from typing import Any

from safehold.repo.gotypes import (
    GoTime,
    format_ns,
    go_mode_from_stat,
    parse_time,
    posix_permissions_from_go_mode,
)
from safehold.repo.tree import Node


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def node_type(st_mode: int) -> str | None:
    if stat.S_ISREG(st_mode):
        return "file"
    if stat.S_ISDIR(st_mode):
        return "dir"
    if stat.S_ISLNK(st_mode):
        return "symlink"
    if stat.S_ISBLK(st_mode):
        return "dev"
    if stat.S_ISCHR(st_mode):
        return "chardev"
    if stat.S_ISFIFO(st_mode):
        return "fifo"
    if stat.S_ISSOCK(st_mode):
        return "socket"
    return None


def read_xattrs(path: bytes) -> list[tuple[str, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    attributes = []
    for name in sorted(names):
        try:
            attributes.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return attributes


def node_from_stat(name: bytes, path: bytes, st: os.stat_result, offset: int) -> Node | None:
    """A node with everything but content/subtree; None for kinds restic does not store."""
    kind = node_type(st.st_mode)
    if kind is None:
        return None
    node = Node(
        name=name,
        type=kind,
        mode=go_mode_from_stat(st.st_mode),
        mtime=GoTime(st.st_mtime_ns, offset),
        atime=GoTime(st.st_atime_ns, offset),
        ctime=GoTime(st.st_ctime_ns, offset),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        inode=st.st_ino,
        device_id=st.st_dev,
    )
    if kind != "dir":
        node.links = st.st_nlink
    if kind == "file":
        node.size = st.st_size
        node.content = []
    elif kind == "symlink":
        node.linktarget = os.readlink(path)
    elif kind in ("dev", "chardev"):
        node.device = st.st_rdev
    node.extended_attributes = read_xattrs(path)
    return node


def json_file_unchanged(node: dict[str, Any], previous: dict[str, Any]) -> bool:
    """restic's rule: same type, size, mtime, ctime and inode means the content is unchanged.

    Compares the JSON forms (times as written), so a parent tree need not be decoded.
    """
    return (
        previous.get("type") == "file"
        and previous.get("size", 0) == node.get("size", 0)
        and _same_instant(previous.get("mtime"), node.get("mtime"))
        and _same_instant(previous.get("ctime"), node.get("ctime"))
        and previous.get("inode", 0) == node.get("inode", 0)
        and isinstance(previous.get("content"), list)
    )


# The keys of a regular file's node, in the order Node.to_json writes them (no xattrs, no
# extra fields); the optional ones are written only when not empty or zero.
_FILE_KEYS = ("name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group",
              "inode", "device_id", "size", "links", "content")  # fmt: skip
_REQUIRED_FILE_KEYS = frozenset(
    ("name", "type", "mtime", "atime", "ctime", "uid", "gid", "content")
)
_OPTIONAL_FILE_KEYS = frozenset(_FILE_KEYS) - _REQUIRED_FILE_KEYS


@lru_cache(maxsize=64)
def _written_by_to_json(keys: tuple[str, ...]) -> bool:
    """Whether a file node with these keys, in this order, is in the form to_json writes."""
    return set(keys) >= _REQUIRED_FILE_KEYS and list(keys) == [k for k in _FILE_KEYS if k in keys]


def reusable_file_json(
    previous: dict[str, Any],
    path: bytes,
    st: os.stat_result,
    offset: int,
    known: tuple[tuple[str, str, str], bool] | None = None,
) -> dict[str, Any] | None:
    """The node `node_from_stat(...).to_json()` would build for the regular file at `path`,
    with the parent's content, made from the parent's node `previous` without building a
    Node; None when anything may differ (then the caller builds it the long way).

    Same size, inode, device, mode, owner, links, mtime and ctime, no extended attributes on
    either side, and `previous` in exactly the form to_json writes: the only field a stat can
    still change is the access time, which is refreshed. (Changing mode, owner, links or
    xattrs moves the ctime, so equal ctimes leave the rest as the parent recorded it.)

    `known`: `stat_times(st, offset)` and whether the file has extended attributes, when the
    caller already has them from this very stat (fs/statahead.py)."""
    get = previous.get
    if (
        get("size", 0) != st.st_size
        or get("inode", 0) != st.st_ino
        or get("device_id", 0) != st.st_dev
        or get("links", 0) != st.st_nlink
        or get("uid") != st.st_uid
        or get("gid") != st.st_gid
        or get("type") != "file"
        or get("mode", 0) != go_mode_from_stat(st.st_mode)
        or get("user", "") != user_name(st.st_uid)
        or get("group", "") != group_name(st.st_gid)
        or not _written_by_to_json(tuple(previous))
        or not all(previous[key] for key in _OPTIONAL_FILE_KEYS if key in previous)
        or not isinstance(previous["content"], list)
    ):
        return None
    atime = _refreshed_atime(previous, path, st, offset, known)
    if atime is None:
        return None
    node = dict(previous)
    node["atime"] = atime
    node["content"] = list(previous["content"])
    return node


# A directory's node as Node.to_json writes it (before the walk adds its subtree): no size
# or links, `content` null.
_DIR_KEYS = ("name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group",
             "inode", "device_id", "content", "subtree")  # fmt: skip
_OPTIONAL_DIR_KEYS = ("mode", "user", "group", "inode", "device_id")


@lru_cache(maxsize=64)
def _dir_written_by_to_json(keys: tuple[str, ...]) -> bool:
    return set(keys) >= _REQUIRED_FILE_KEYS and list(keys) == [k for k in _DIR_KEYS if k in keys]


def reusable_dir_json(
    previous: dict[str, Any],
    path: bytes,
    st: os.stat_result,
    offset: int,
    known: tuple[tuple[str, str, str], bool] | None = None,
) -> dict[str, Any] | None:
    """`reusable_file_json` for a directory: the node `node_from_stat(...).to_json()` would
    build (no subtree: the walk adds it), from the parent's node, or None. Same mode, owner,
    inode, device, mtime and ctime, no extended attributes, `previous` in to_json's form."""
    get = previous.get
    if (
        get("type") != "dir"
        or get("inode", 0) != st.st_ino
        or get("device_id", 0) != st.st_dev
        or get("uid") != st.st_uid
        or get("gid") != st.st_gid
        or get("mode", 0) != go_mode_from_stat(st.st_mode)
        or get("user", "") != user_name(st.st_uid)
        or get("group", "") != group_name(st.st_gid)
        or get("content", False) is not None
        or not _dir_written_by_to_json(tuple(previous))
        or not all(previous[key] for key in _OPTIONAL_DIR_KEYS if key in previous)
    ):
        return None
    atime = _refreshed_atime(previous, path, st, offset, known)
    if atime is None:
        return None
    node = dict(previous)
    node.pop("subtree", None)
    node["atime"] = atime
    return node


def _refreshed_atime(
    previous: dict[str, Any],
    path: bytes,
    st: os.stat_result,
    offset: int,
    known: tuple[tuple[str, str, str], bool] | None,
) -> str | None:
    """The access time to write into the parent's node `previous` when the entry at `path`
    has its mtime and ctime and no extended attributes (the last checks of reusable_file_json
    and reusable_dir_json); None when it differs."""
    (mtime, atime, ctime), has_xattrs = known or (stat_times(st, offset), None)
    if previous["mtime"] != mtime or previous["ctime"] != ctime:
        return None
    if has_xattrs is None:
        try:
            has_xattrs = bool(os.listxattr(path, follow_symlinks=False))
        except OSError:
            has_xattrs = False  # read_xattrs records none either
    return None if has_xattrs else atime


def stat_times(st: os.stat_result, offset: int) -> tuple[str, str, str]:
    """A node's mtime, atime and ctime as Node.to_json writes them from this stat (an atime
    or ctime equal to the mtime is the same text, formatted once)."""
    mtime_ns = st.st_mtime_ns
    mtime = format_ns(mtime_ns, offset)
    atime_ns, ctime_ns = st.st_atime_ns, st.st_ctime_ns
    atime = mtime if atime_ns == mtime_ns else format_ns(atime_ns, offset)
    ctime = mtime if ctime_ns == mtime_ns else format_ns(ctime_ns, offset)
    return mtime, atime, ctime


def _same_instant(old: object, new: object) -> bool:
    """Equal strings, or the same instant written with another UTC offset (a DST change)."""
    if old == new:
        return True
    if not isinstance(old, str) or not isinstance(new, str):
        return False
    try:
        return parse_time(old).ns == parse_time(new).ns
    except ValueError:
        return False


def apply_metadata(path: bytes, node: Node, *, restore_owner: bool) -> list[str]:
    """Owner, mode, xattrs and times, in that order (chown clears setuid, so mode comes after).

    Returns warnings for what could not be applied (e.g. an xattr namespace the target
    filesystem refuses); the caller reports them without failing the restore.
    """
    warnings: list[str] = []
    is_link = node.type == "symlink"
    if restore_owner:
        try:
            os.lchown(path, node.uid, node.gid)
        except OSError as err:
            warnings.append(f"cannot set owner: {err.strerror}")
    if not is_link:
        os.chmod(path, posix_permissions_from_go_mode(node.mode))
    for name, value in node.extended_attributes:
        try:
            os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EPERM):
                warnings.append(f"cannot set xattr {name}: {err.strerror}")
            else:
                warnings.append(f"xattr {name} not supported here")
    os.utime(path, ns=(node.atime.ns, node.mtime.ns), follow_symlinks=False)
    return warnings


def apply_file_metadata(fd: int, node: Node, *, restore_owner: bool) -> list[str]:
    """`apply_metadata` for a regular file that is open (as `fd`): the same order, without a
    path lookup per call. The times survive a later rename of the file."""
    warnings: list[str] = []
    if restore_owner:
        try:
            os.fchown(fd, node.uid, node.gid)
        except OSError as err:
            warnings.append(f"cannot set owner: {err.strerror}")
    os.fchmod(fd, posix_permissions_from_go_mode(node.mode))
    for name, value in node.extended_attributes:
        try:
            os.setxattr(fd, name, value)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EPERM):
                warnings.append(f"cannot set xattr {name}: {err.strerror}")
            else:
                warnings.append(f"xattr {name} not supported here")
    os.utime(fd, ns=(node.atime.ns, node.mtime.ns))
    return warnings
