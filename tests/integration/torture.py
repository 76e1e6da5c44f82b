"""A "torture tree" of awkward filesystem entries, and an exact tree comparison.

`build_torture_tree(root)` creates every kind of entry a backup tool gets wrong: files of edge
sizes, sparse files, hardlinks, symlinks (dangling, looping), FIFOs, special mode bits, numeric
owners without a passwd entry, nanosecond mtimes, user xattrs, and names with newlines,
invalid UTF-8, backslashes and quotes. `compare_trees(a, b)` walks two trees with os.lstat and
returns every difference (an empty list means the trees are the same).

Needs root (chown, setuid on foreign-owned files) and a filesystem with user xattrs (ext4).
Reusable by any test: it imports nothing from safehold.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

FOREIGN_ID = 12345  # a uid/gid with no passwd/group entry
BASE_MTIME_NS = 1_600_000_000_123_456_789  # 2020-09-13, with nanoseconds that must survive

SPARSE_SIZE = 64 * MIB + 7
SPARSE_DATA_AT = 32 * MIB
SPARSE_DATA = b"sparse-island"

BAD_UTF8_NAME = b"bad\xffname"
BAD_UTF8_DIR = b"dir\xfe\xfd"
NEWLINE_NAME = b"new\nline"
QUOTE_NAME = b'back\\slash"quote'
UNICODE_NAMES = ("café.txt", "日本語のファイル.txt", "party 🎉.txt")
BAD_LINK_TARGET = b"target-\xff-not-utf8"


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _compressible_text(size: int) -> bytes:
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]
    rng = random.Random(7)
    lines = []
    total = 0
    number = 0
    while total < size:
        line = b"%08d " % number + b" ".join(rng.choice(words) for _ in range(10)) + b"\n"
        lines.append(line)
        total += len(line)
        number += 1
    return b"".join(lines)[:size]


def build_torture_tree(
    root: Path | str | bytes,
    *,
    bad_link_target: bool = False,
    big_files: bool = True,
) -> bytes:
    """Create the tree under `root` (created, must not exist); returns root as bytes.

    bad_link_target: add a symlink whose target is not valid UTF-8 (restic 0.14 cannot store
    those losslessly: it writes U+FFFD). big_files=False drops the ~3 MiB, ~20 MiB and 64 MiB
    sparse files for quick tests.
    """
    base = os.fsencode(os.fspath(root))
    os.makedirs(base)

    def p(*parts: str | bytes) -> bytes:
        return os.path.join(base, *(os.fsencode(part) for part in parts))

    def write(path: bytes, data: bytes) -> None:
        with open(path, "wb") as handle:
            handle.write(data)

    # regular files of edge sizes
    os.mkdir(p("files"))
    write(p("files", "empty"), b"")
    write(p("files", "one"), b"1")
    write(p("files", "f4095"), _random_bytes(1, 4095))
    write(p("files", "exactly-512k"), _random_bytes(2, 512 * KIB))
    if big_files:
        write(p("files", "random-3m"), _random_bytes(3, 3 * MIB + 12_345))
        write(p("files", "text-20m.log"), _compressible_text(20 * MIB + 321))
        # sparse: a hole, a few bytes in the middle, a hole up to an odd size
        with open(p("files", "sparse.img"), "wb") as handle:
            handle.truncate(SPARSE_SIZE)
            handle.seek(SPARSE_DATA_AT)
            handle.write(SPARSE_DATA)

    # nested and empty directories
    os.makedirs(p("nested", "a", "b", "c"))
    write(p("nested", "a", "top.txt"), b"top\n")
    write(p("nested", "a", "b", "c", "deep.txt"), b"deep\n" * 100)
    os.makedirs(p("nested", "empty-inner"))
    os.mkdir(p("empty"))

    # symlinks: relative, absolute-looking, dangling, a loop
    os.mkdir(p("links"))
    os.symlink(b"../files/one", p("links", "to-file"))
    os.symlink(b"../nested", p("links", "to-dir"))
    os.symlink(b"does/not/exist", p("links", "dangling"))
    os.symlink(b"/nonexistent/absolute/target", p("links", "absolute-dangling"))
    os.symlink(b"loop-b", p("links", "loop-a"))
    os.symlink(b"loop-a", p("links", "loop-b"))
    if bad_link_target:
        os.symlink(BAD_LINK_TARGET, p("links", "bad-target"))

    # hardlinks: three names, one inode (across two directories)
    os.makedirs(p("hard", "sub"))
    write(p("hard", "h1"), _random_bytes(4, 10_000))
    os.link(p("hard", "h1"), p("hard", "h2"))
    os.link(p("hard", "h1"), p("hard", "sub", "h3"))
    write(p("hard", "single"), b"not linked\n")

    # names
    os.mkdir(p("names"))
    for index, name in enumerate(UNICODE_NAMES):
        write(p("names", name), f"unicode {index}\n".encode())
    write(p("names", NEWLINE_NAME), b"newline in name\n")
    write(p("names", BAD_UTF8_NAME), b"invalid utf-8 in name\n")
    write(p("names", QUOTE_NAME), b"backslash and quote\n")
    write(p("names", "tab\there"), b"tab\n")
    os.mkdir(p("names", BAD_UTF8_DIR))
    write(p("names", BAD_UTF8_DIR, "inside"), b"file in a dir with a bad name\n")
    os.mkdir(p("names", "日本"))
    write(p("names", "日本", "ü"), b"nested unicode\n")

    # special files
    os.mkdir(p("special"))
    os.mkfifo(p("special", "fifo"), 0o640)

    # modes
    os.mkdir(p("modes"))
    for name, mode in (("setuid", 0o4755), ("setgid", 0o2755), ("both", 0o6711),
                       ("private", 0o600), ("exec-only", 0o700), ("none", 0o000),
                       ("world", 0o666)):  # fmt: skip
        write(p("modes", name), name.encode())
        os.chmod(p("modes", name), mode)
    os.mkdir(p("modes", "sticky"))
    write(p("modes", "sticky", "inside"), b"in a sticky dir\n")
    os.chmod(p("modes", "sticky"), 0o1777)
    os.mkdir(p("modes", "setgid-dir"))
    os.mkdir(p("modes", "setgid-dir", "plain-sub"))  # created before the parent gets g+s
    os.chmod(p("modes", "setgid-dir"), 0o2775)
    os.mkdir(p("modes", "private-dir"))
    os.chmod(p("modes", "private-dir"), 0o700)

    # numeric owners without a passwd entry
    os.mkdir(p("owners"))
    write(p("owners", "foreign"), b"owned by 12345\n")
    os.chown(p("owners", "foreign"), FOREIGN_ID, FOREIGN_ID)
    write(p("owners", "foreign-setuid"), b"setuid, owned by 12345\n")
    os.chown(p("owners", "foreign-setuid"), FOREIGN_ID, 0)
    os.chmod(p("owners", "foreign-setuid"), 0o4750)  # chown clears setuid: chmod after
    os.symlink(b"foreign", p("owners", "foreign-link"))
    os.lchown(p("owners", "foreign-link"), FOREIGN_ID, FOREIGN_ID)
    os.mkdir(p("owners", "foreign-dir"))
    os.chown(p("owners", "foreign-dir"), 0, FOREIGN_ID)

    # extended attributes
    os.mkdir(p("xattrs"))
    write(p("xattrs", "commented"), b"has an xattr\n")
    os.setxattr(p("xattrs", "commented"), "user.comment", b"a comment \x00\xff binary")
    os.setxattr(p("xattrs", "commented"), "user.empty", b"")
    os.setxattr(p("xattrs"), "user.on-dir", b"dir attribute")

    # nanosecond mtimes on everything, deepest first so that no later write changes a dir's
    # mtime; every entry gets a distinct value
    entries = sorted(_walk(base), key=lambda path: path.count(b"/"), reverse=True)
    for number, path in enumerate(entries):
        mtime = BASE_MTIME_NS + number * 1_000_003_001
        atime = BASE_MTIME_NS - 86_400 * 10**9 + number
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    return base


def _walk(top: bytes) -> Iterator[bytes]:
    """Every path under `top` (top included), without following symlinks."""
    yield top
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def sha256_file(path: bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev")):  # fmt: skip
        if test(mode):
            return name
    return "unknown"


def compare_trees(
    expected: Path | str | bytes,
    actual: Path | str | bytes,
    *,
    ignore: set[bytes] | None = None,
    check_root: bool = True,
) -> list[str]:
    """Every difference between two trees (relative paths shown with repr of the bytes).

    Compares per entry: presence, type, permission bits incl. setuid/setgid/sticky, uid/gid,
    size (not for dirs: their size depends on the filesystem's history), mtime_ns (symlinks
    too: Linux has lutimes), symlink target bytes, sha256 of file content, xattrs; and across
    the tree, the grouping of hardlinked names. `ignore` holds relative paths to skip.
    """
    left_root = os.fsencode(os.fspath(expected))
    right_root = os.fsencode(os.fspath(actual))
    ignore = ignore or set()
    problems: list[str] = []

    def relative_entries(root: bytes) -> dict[bytes, os.stat_result]:
        result = {}
        for path in _walk(root):
            rel = os.path.relpath(path, root)
            if rel in ignore or (rel == b"." and not check_root):
                continue
            result[rel] = os.lstat(path)
        return result

    left = relative_entries(left_root)
    right = relative_entries(right_root)
    for rel in sorted(set(left) - set(right)):
        problems.append(f"{rel!r}: missing")
    for rel in sorted(set(right) - set(left)):
        problems.append(f"{rel!r}: unexpected extra entry")

    for rel in sorted(set(left) & set(right)):
        a, b = left[rel], right[rel]
        kind_a, kind_b = _kind(a.st_mode), _kind(b.st_mode)
        if kind_a != kind_b:
            problems.append(f"{rel!r}: type {kind_a} != {kind_b}")
            continue
        if stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode):
            problems.append(
                f"{rel!r}: mode {stat.S_IMODE(a.st_mode):04o} != {stat.S_IMODE(b.st_mode):04o}"
            )
        if (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
            problems.append(f"{rel!r}: owner {a.st_uid}:{a.st_gid} != {b.st_uid}:{b.st_gid}")
        if kind_a != "dir" and a.st_size != b.st_size:
            problems.append(f"{rel!r}: size {a.st_size} != {b.st_size}")
        if a.st_mtime_ns != b.st_mtime_ns:
            problems.append(f"{rel!r}: mtime_ns {a.st_mtime_ns} != {b.st_mtime_ns}")
        path_a = os.path.join(left_root, rel)
        path_b = os.path.join(right_root, rel)
        if kind_a == "symlink":
            target_a, target_b = os.readlink(path_a), os.readlink(path_b)
            if target_a != target_b:
                problems.append(f"{rel!r}: link target {target_a!r} != {target_b!r}")
        same_size = a.st_size == b.st_size
        if kind_a == "file" and same_size and sha256_file(path_a) != sha256_file(path_b):
            problems.append(f"{rel!r}: content differs")
        xattrs_a, xattrs_b = _xattrs(path_a), _xattrs(path_b)
        if xattrs_a != xattrs_b:
            problems.append(f"{rel!r}: xattrs {xattrs_a!r} != {xattrs_b!r}")

    def link_groups(entries: dict[bytes, os.stat_result]) -> set[frozenset[bytes]]:
        by_inode: dict[tuple[int, int], set[bytes]] = {}
        for rel, st in entries.items():
            if stat.S_ISREG(st.st_mode):
                by_inode.setdefault((st.st_dev, st.st_ino), set()).add(rel)
        return {frozenset(group) for group in by_inode.values() if len(group) > 1}

    groups_a, groups_b = link_groups(left), link_groups(right)
    if groups_a != groups_b:
        problems.append(
            f"hardlink groups differ: {sorted(map(sorted, groups_a))} != "
            f"{sorted(map(sorted, groups_b))}"
        )
    return problems


def restored_root(target: Path | str | bytes, source: Path | str | bytes) -> bytes:
    """Where a restore of a snapshot of absolute path `source` into `target` puts it (restic and
    safehold both keep every component of an absolute backup path)."""
    return os.path.join(os.fsencode(os.fspath(target)), os.fsencode(os.fspath(source)).lstrip(b"/"))


def allocated_bytes(path: bytes) -> int:
    return os.lstat(path).st_blocks * 512
