"""End to end through the real CLI (`python -m safehold` as a subprocess).

Every run goes through `Cli.run`, which fails the test if any output shows a Python traceback
or any password the test has used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HEX64 = re.compile(r"^[0-9a-f]{64}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


@dataclass
class Cli:
    run_cli: object
    env: dict[str, str]
    repo: Path
    secrets: set[str] = field(default_factory=set)

    def run(
        self,
        *args: str | os.PathLike[str],
        expect: int | None = 0,
        env: dict[str, str] | None = None,
        repo: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = [os.fspath(arg) for arg in args]
        if repo:
            argv = ["-r", str(self.repo), *argv]
        proc = self.run_cli(*argv, env=env)  # type: ignore[operator]
        self.assert_clean(proc)
        if expect is not None:
            assert proc.returncode == expect, (
                f"{argv} exited {proc.returncode}, expected {expect}\n"
                f"--stdout--\n{proc.stdout}\n--stderr--\n{proc.stderr}"
            )
        return proc

    def assert_clean(self, proc: subprocess.CompletedProcess[str]) -> None:
        for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert "Traceback" not in text, f"traceback on {name}:\n{text}"
            for secret in self.secrets | {self.env["SAFEHOLD_PASSWORD"]}:
                assert secret not in text, f"a password appeared on {name}"

    def json(self, *args: str | os.PathLike[str]) -> object:
        return json.loads(self.run(*args, "--json").stdout)

    def snapshots(self) -> list[dict[str, object]]:
        value = self.json("snapshots")
        assert isinstance(value, list)
        return value


@pytest.fixture
def cli(run_cli: object, cli_env: dict[str, str], tmp_path: Path) -> Cli:
    return Cli(run_cli, cli_env, tmp_path / "repo")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "big.bin").write_bytes(os.urandom(1_500_000))
    (root / "sub" / "b.txt").write_text("bravo\n")
    (root / "sub" / "deeper" / "c.txt").write_text("charlie\n")
    (root / "other" / "d.txt").write_text("delta\n")
    os.symlink("a.txt", root / "link")
    return root


def _tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> content hash (or link target / 'dir'), for a quick equality check."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                result[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                result[rel] = "dir"
            else:
                result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def _restored(target: Path, source: Path) -> Path:
    return target / str(source).lstrip("/")


def _backup(cli: Cli, *args: str | os.PathLike[str]) -> dict[str, object]:
    value = cli.json("backup", *args)
    assert isinstance(value, dict)
    return value


# ----- init, backup, snapshots ---------------------------------------------------------------


def test_init_backup_and_snapshots(cli: Cli, src: Path) -> None:
    proc = cli.run("init")
    assert "created repository" in proc.stdout
    assert (cli.repo / "config").is_file()

    proc = cli.run("backup", src)
    assert re.search(r"files: 5 new, 0 changed, 0 unmodified", proc.stdout), proc.stdout
    saved = re.search(r"snapshot ([0-9a-f]{8}) saved as (\S+)", proc.stdout)
    assert saved, proc.stdout
    short_id, name = saved.groups()

    text = cli.run("snapshots").stdout
    assert text.splitlines()[0].split() == ["ID", "Time", "Name", "Paths"]
    assert f"{short_id} " in text and name in text and str(src) in text
    assert "1 snapshot(s)" in text

    (snap,) = cli.snapshots()
    assert set(snap) == {"id", "short_id", "time", "name", "reason", "complete", "paths",
                         "hostname", "username", "tags", "parent", "tree", "summary"}  # fmt: skip
    assert HEX64.match(str(snap["id"])) and HEX64.match(str(snap["tree"]))
    assert snap["short_id"] == short_id == str(snap["id"])[:8]
    assert RFC3339.match(str(snap["time"])), snap["time"]
    assert snap["name"] == name
    assert snap["reason"] == "manual"
    assert snap["complete"] is True
    assert snap["paths"] == [str(src)]
    assert snap["parent"] is None
    assert snap["tags"] == ["manual"]

    # a second, unchanged backup reads nothing and names the first as parent
    summary = _backup(cli, src)
    assert summary["files_unmodified"] == 5 and summary["bytes_read"] == 0
    assert summary["files_new"] == 0 and summary["files_changed"] == 0
    assert summary["complete"] is True and summary["errors"] == []
    second = cli.snapshots()[1]
    assert second["parent"] == snap["id"]
    assert second["id"] == summary["snapshot_id"]


def test_global_options_anywhere_and_repository_from_environment(cli: Cli, src: Path) -> None:
    cli.run("init", "-q", repo=False, env={"SAFEHOLD_REPOSITORY": str(cli.repo)})
    proc = cli.run("backup", src, "--repo", str(cli.repo), "--quiet", repo=False)
    assert proc.stdout == "" and proc.stderr == ""
    listing = cli.run("snapshots", "--json", repo=False,
                      env={"SAFEHOLD_REPOSITORY": str(cli.repo)})  # fmt: skip
    assert len(json.loads(listing.stdout)) == 1
    # no repository at all
    proc = cli.run("snapshots", repo=False, expect=1)
    assert "no repository given" in proc.stderr


# ----- ls, restore, dump, diff -------------------------------------------------------------


def test_ls_text_long_json_and_path(cli: Cli, src: Path) -> None:
    cli.run("init")
    cli.run("backup", src)
    base = str(src)
    lines = cli.run("ls", "latest").stdout.splitlines()
    for rel in ("", "/a.txt", "/big.bin", "/sub", "/sub/b.txt", "/sub/deeper/c.txt", "/link",
                "/empty"):  # fmt: skip
        assert base + rel in lines, (rel, lines)
    assert lines.index(base + "/sub") < lines.index(base + "/sub/b.txt")

    long_lines = cli.run("ls", "-l", "latest").stdout.splitlines()
    big = next(line for line in long_lines if line.endswith(base + "/big.bin"))
    assert big.split()[:3] == ["file", "0644", "1500000"]
    link = next(line for line in long_lines if line.endswith(base + "/link"))
    assert link.split()[0] == "symlink"
    sub = next(line for line in long_lines if line.endswith(base + "/sub"))
    assert sub.split()[0] == "dir"

    entries = cli.json("ls", "latest", base + "/sub")
    assert isinstance(entries, list)
    assert [e["path"] for e in entries] == [
        base + "/sub",
        base + "/sub/b.txt",
        base + "/sub/deeper",
        base + "/sub/deeper/c.txt",
    ]
    b_txt = entries[1]
    assert set(b_txt) >= {"path", "name", "type", "mode", "size", "mtime", "uid", "gid"}
    assert (b_txt["name"], b_txt["type"], b_txt["size"]) == ("b.txt", "file", 6)
    assert RFC3339.match(b_txt["mtime"])
    link_json = cli.json("ls", "latest", base + "/link")
    assert link_json[0]["linktarget"] == "a.txt"  # type: ignore[index]

    proc = cli.run("ls", "latest", base + "/nope", expect=1)
    assert "is not in snapshot" in proc.stderr


def test_restore_refuses_a_non_empty_target_unless_forced(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    cli.run("init")
    cli.run("backup", src)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep-me").write_text("precious\n")
    proc = cli.run("restore", "latest", "--target", target, expect=1)
    assert proc.stderr.startswith("error: restore target")
    assert "is not empty" in proc.stderr and "--force" in proc.stderr
    assert sorted(os.listdir(target)) == ["keep-me"]

    proc = cli.run("restore", "latest", "--target", target, "--force")
    assert "restored snapshot" in proc.stdout
    assert (target / "keep-me").read_text() == "precious\n"
    assert _tree_digest(_restored(target, src)) == _tree_digest(src)

    # a file in the way of the target
    blocker = tmp_path / "file-target"
    blocker.write_text("x")
    proc = cli.run("restore", "latest", "--target", blocker, expect=1)
    assert "not a folder" in proc.stderr


def test_restore_include_restores_only_that_subtree(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.run("init")
    cli.run("backup", src)
    target = tmp_path / "partial"
    cli.run("restore", "latest", "--target", target, "--include", str(src / "sub"))
    restored = _restored(target, src)
    assert sorted(os.listdir(restored)) == ["sub"]
    assert _tree_digest(restored / "sub") == _tree_digest(src / "sub")

    proc = cli.run("restore", "latest", "--target", tmp_path / "none",
                   "--include", str(src / "no-such-dir"), expect=1)  # fmt: skip
    assert "matches nothing" in proc.stderr


def test_dump_writes_the_exact_bytes(
    cli: Cli, src: Path, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    cli.run("init")
    cli.run("backup", src)
    out = tmp_path / "dumped.bin"
    with open(out, "wb") as handle:
        argv = ["-r", str(cli.repo), "dump", "latest", str(src / "big.bin")]
        proc = subprocess.run(
            [sys.executable, "-m", "safehold", *argv],
            env=cli_env,
            stdout=handle,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert out.read_bytes() == (src / "big.bin").read_bytes()

    proc_dir = cli.run("dump", "latest", str(src / "sub"), expect=1)
    assert "is a dir, not a file" in proc_dir.stderr


def test_diff_shows_added_removed_and_modified(cli: Cli, src: Path) -> None:
    cli.run("init")
    cli.run("backup", src)
    (src / "a.txt").write_text("alpha, changed\n")
    (src / "sub" / "b.txt").unlink()
    (src / "new.txt").write_text("new\n")
    (src / "newdir").mkdir()
    (src / "newdir" / "inside").write_text("inside\n")
    cli.run("backup", src)
    first, second = (str(s["id"]) for s in cli.snapshots())
    text = cli.run("diff", first[:8], second[:8]).stdout
    lines = [line.split(None, 1) for line in text.splitlines() if line[:1] in "+-MTU"]
    changes = {path.strip(): change for change, path in lines}
    base = str(src)
    assert changes[base + "/a.txt"] == "M"
    assert changes[base + "/sub/b.txt"] == "-"
    assert changes[base + "/new.txt"] == "+"
    assert changes[base + "/newdir/"] == "+"
    assert changes[base + "/newdir/inside"] == "+"
    assert base + "/big.bin" not in changes
    value = cli.json("diff", first, second)
    assert isinstance(value, dict)
    assert (value["added"], value["removed"], value["modified"]) == (3, 1, 1)
    assert {"change": "M", "path": base + "/a.txt"} in value["changes"]


# ----- check, forget, prune, stats ---------------------------------------------------------


def test_check_with_read_data_subsets(cli: Cli, src: Path) -> None:
    cli.run("init")
    cli.run("backup", src)
    (src / "more.bin").write_bytes(os.urandom(300_000))
    cli.run("backup", src)
    proc = cli.run("check")
    assert "no errors were found" in proc.stdout
    full = cli.json("check", "--read-data")
    assert isinstance(full, dict)
    assert full["ok"] is True and full["errors"] == [] and full["snapshots_checked"] == 2
    assert full["packs_read"] == full["packs_checked"] >= 2

    half = cli.json("check", "--read-data", "--subset", "50%")
    assert isinstance(half, dict)
    assert half["ok"] is True
    assert 1 <= half["packs_read"] <= full["packs_read"]  # type: ignore[operator]
    groups = [cli.json("check", "--read-data", "--subset", f"{n}/2") for n in (1, 2)]
    assert sum(g["packs_read"] for g in groups) == full["packs_read"]  # type: ignore[index]
    assert "no errors were found" in cli.run("check", "--read-data", "--subset", "1/2").stdout

    for bad in ("0%", "150%", "3/2", "x/y", "abc"):
        proc = cli.run("check", "--read-data", "--subset", bad, expect=1)
        assert "invalid --subset" in proc.stderr
    proc = cli.run("check", "--subset", "1/2", expect=1)
    assert "--subset needs --read-data" in proc.stderr


def test_forget_and_prune_free_space(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.run("init")
    (src / "doomed.bin").write_bytes(os.urandom(2_000_000))
    cli.run("backup", src)
    (src / "doomed.bin").unlink()
    cli.run("backup", src)
    before = cli.json("stats")
    assert isinstance(before, dict) and before["snapshots"] == 2
    first, second = (str(s["id"]) for s in cli.snapshots())

    proc = cli.run("forget", "--dry-run", first[:8])
    assert f"REMOVE {first[:8]}" in proc.stdout and "1 snapshot(s) would be removed" in proc.stdout
    assert len(cli.snapshots()) == 2
    proc = cli.run("forget", first[:8])
    assert f"REMOVE {first[:8]}" in proc.stdout and "removed 1 snapshot(s)" in proc.stdout
    assert [s["id"] for s in cli.snapshots()] == [second]
    proc = cli.run("prune", "--dry-run")
    assert "dry run" in proc.stdout
    proc = cli.run("prune")
    assert "prune done" in proc.stdout
    after = cli.json("stats")
    assert isinstance(after, dict)
    assert after["pack_bytes"] < before["pack_bytes"] - 1_900_000  # type: ignore[operator]
    assert "no errors were found" in cli.run("check", "--read-data").stdout
    target = tmp_path / "restore"
    cli.run("restore", "latest", "--target", target)
    assert _tree_digest(_restored(target, src)) == _tree_digest(src)
    proc = cli.run("prune")
    assert "nothing to prune" in proc.stdout
    proc = cli.run("forget", "deadbeef", expect=1)
    assert "no snapshot matches" in proc.stderr


def test_stats_json(cli: Cli, src: Path) -> None:
    cli.run("init")
    cli.run("backup", src)
    stats = cli.json("stats")
    assert isinstance(stats, dict)
    assert set(stats) >= {"snapshots", "packs", "pack_bytes", "data_blobs", "tree_blobs",
                          "uncompressed_bytes", "stored_blob_bytes", "restore_size_latest",
                          "files_latest", "index_files", "keys", "compression_ratio"}  # fmt: skip
    assert stats["snapshots"] == 1 and stats["keys"] == 1 and stats["index_files"] == 1
    assert stats["files_latest"] == 5  # the symlink is not a file
    sizes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    assert stats["restore_size_latest"] == sizes
    assert stats["uncompressed_bytes"] >= sizes  # type: ignore[operator]
    assert stats["pack_bytes"] == sum(
        p.stat().st_size for p in (cli.repo / "data").rglob("*") if p.is_file()
    )
    text = cli.run("stats").stdout
    assert "snapshots:" in text and "compression ratio:" in text


# ----- keys and passwords --------------------------------------------------------------------


def test_key_add_list_remove_passwd(cli: Cli, tmp_path: Path) -> None:
    cli.run("init")
    new_password = "second key's pass phrase"
    third_password = "third pass phrase, after passwd"
    cli.secrets |= {new_password, third_password}
    new_file = tmp_path / "new-pass"
    new_file.write_text(new_password + "\n")
    proc = cli.run("key", "add", "--new-password-file", new_file)
    added = re.search(r"added key ([0-9a-f]{8})", proc.stdout)
    assert added, proc.stdout

    keys = cli.json("key", "list")
    assert isinstance(keys, list) and len(keys) == 2
    assert all(HEX64.match(k["id"]) and RFC3339.match(k["created"]) for k in keys)
    (original,) = [k["id"] for k in keys if k["current"]]
    (second,) = [k["id"] for k in keys if not k["current"]]
    assert second.startswith(added.group(1))

    with_new = {"SAFEHOLD_PASSWORD": new_password}
    listed = json.loads(cli.run("key", "list", "--json", env=with_new).stdout)
    assert [k["id"] for k in listed if k["current"]] == [second]
    proc = cli.run("key", "remove", second[:8], env=with_new, expect=1)
    assert "refusing to remove the key this session is using" in proc.stderr
    cli.run("key", "remove", original[:8], env=with_new)
    cli.run("snapshots", expect=12)  # the original password is gone

    third_file = tmp_path / "third-pass"
    third_file.write_text(third_password)
    proc = cli.run("key", "passwd", "--new-password-file", third_file, env=with_new)
    assert "password changed" in proc.stdout
    cli.run("snapshots", env=with_new, expect=12)
    keys = json.loads(cli.run("key", "list", "--json",
                              env={"SAFEHOLD_PASSWORD": third_password}).stdout)  # fmt: skip
    assert len(keys) == 1 and keys[0]["current"] is True
    proc = cli.run("key", "remove", keys[0]["id"][:8],
                   env={"SAFEHOLD_PASSWORD": third_password}, expect=1)  # fmt: skip
    assert "refusing" in proc.stderr


def test_wrong_password_no_repository_and_not_empty(cli: Cli, tmp_path: Path) -> None:
    proc = cli.run("snapshots", expect=10)
    assert "no repository at" in proc.stderr and "hint:" in proc.stderr
    cli.run("init")
    proc = cli.run("snapshots", env={"SAFEHOLD_PASSWORD": "not the password"}, expect=12)
    assert "wrong password" in proc.stderr
    proc = cli.run("init", expect=1)
    assert "exists and is not empty" in proc.stderr

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine\n")
    proc = cli.run("-r", occupied, "init", repo=False, expect=1)
    assert "exists and is not empty" in proc.stderr
    assert os.listdir(occupied) == ["notes.txt"]
    proc = cli.run("-r", occupied, "snapshots", repo=False, expect=10)
    assert "is not a repository" in proc.stderr


def test_unreadable_key_file_is_not_a_wrong_password(cli: Cli) -> None:
    """Exit 12 means the password matched no readable key; a damaged key file is named."""
    cli.run("init")
    (key_file,) = (cli.repo / "keys").iterdir()
    key_file.chmod(0o600)
    good = key_file.read_bytes()
    key_file.write_bytes(good[:40])  # truncated: not JSON any more
    proc = cli.run("snapshots", expect=1)
    assert "can be read" in proc.stderr and key_file.name in proc.stderr
    assert "wrong password" not in proc.stderr
    # The damaged file beside an intact one, each under a name: the intact key is named by
    # the hash of its bytes (as restic writes it), the damaged one no longer matches its name.
    damaged = cli.repo / "keys" / ("0" * 64)
    damaged.write_bytes(key_file.read_bytes())
    key_file.write_bytes(good)
    cli.run("snapshots")
    listed = cli.run("key", "list").stdout
    assert "unreadable" in listed and damaged.name[:8] in listed
    proc = cli.run("snapshots", env={"SAFEHOLD_PASSWORD": "not the password"}, expect=12)
    assert "1 readable key" in proc.stderr and damaged.name in proc.stderr


def test_password_file_and_command(cli: Cli, tmp_path: Path) -> None:
    cli.run("init")
    password = cli.env["SAFEHOLD_PASSWORD"]
    no_env_password = {"SAFEHOLD_PASSWORD": ""}
    pass_file = tmp_path / "pass"
    pass_file.write_text(password + "\n")

    cli.run("snapshots", env={**no_env_password, "SAFEHOLD_PASSWORD_FILE": str(pass_file)})
    cli.run("--password-file", pass_file, "snapshots", env=no_env_password)
    command = f"cat {pass_file}"
    cli.run("snapshots", env={**no_env_password, "SAFEHOLD_PASSWORD_COMMAND": command})
    cli.run("snapshots", "--password-command", command, env=no_env_password)
    # the file wins over the environment variable, as in restic
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("wrong\n")
    cli.run("snapshots", env={"SAFEHOLD_PASSWORD_FILE": str(wrong_file)}, expect=12)

    proc = cli.run("snapshots", env={**no_env_password, "SAFEHOLD_PASSWORD_COMMAND": "false"},
                   expect=12)  # fmt: skip
    assert "the password command exited with status 1" in proc.stderr
    proc = cli.run("snapshots", env={**no_env_password,
                                     "SAFEHOLD_PASSWORD_COMMAND": "/no/such/program"},
                   expect=12)  # fmt: skip
    assert "the password command could not run" in proc.stderr
    proc = cli.run("snapshots", env={**no_env_password, "SAFEHOLD_PASSWORD_COMMAND": "true"},
                   expect=12)  # fmt: skip
    assert "printed nothing" in proc.stderr
    # a command that prints the password and then fails: neither appears in any message
    leaky = f"sh -c {shlex.quote(f'echo {password}; echo {password} >&2; exit 3')}"
    proc = cli.run("snapshots", "--password-command", leaky, env=no_env_password, expect=12)
    assert "exited with status 3" in proc.stderr
    proc = cli.run("snapshots", env={**no_env_password,
                                     "SAFEHOLD_PASSWORD_FILE": str(tmp_path / "missing")},
                   expect=12)  # fmt: skip
    assert "cannot read the password file" in proc.stderr
    proc = cli.run("snapshots", env=no_env_password, expect=12)
    assert "no repository password given" in proc.stderr


# ----- backup errors, quiet, excludes ------------------------------------------------------


def test_backup_of_a_missing_path_fails_cleanly(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.run("init")
    proc = cli.run("backup", src, tmp_path / "does-not-exist", expect=1)
    assert f"error: {tmp_path / 'does-not-exist'} does not exist" in proc.stderr
    assert cli.snapshots() == []
    proc = cli.run("backup", "--reason", "Bogus!", src, expect=1)  # reasons are open words
    assert "Bogus!" in proc.stderr


def test_unreadable_file_gives_exit_3_and_an_incomplete_snapshot(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    """Root reads any mode-000 file, so the unreadable file is /proc/self/mem: it lstat()s as
    a regular file, but reading at offset 0 fails with EIO in every process."""
    cli.run("init")
    proc = cli.run("backup", src, "/proc/self/mem", expect=3)
    assert "error: /proc/self/mem: Input/output error" in proc.stderr
    assert "marked incomplete" in proc.stderr
    (snap,) = cli.snapshots()
    assert snap["complete"] is False
    assert "[INCOMPLETE]" in cli.run("snapshots").stdout
    target = tmp_path / "restore"
    cli.run("restore", "latest", "--target", target)
    assert _tree_digest(_restored(target, src)) == _tree_digest(src)
    assert not (target / "proc" / "self" / "mem").exists()


def test_backup_of_a_path_that_is_not_utf8(cli: Cli, tmp_path: Path) -> None:
    """The snapshot's `paths` hold text: a bad byte is recorded as U+FFFD (as restic does);
    the tree keeps the exact name, and the next backup still finds its parent."""
    raw = os.path.join(os.fsencode(tmp_path), b"data-\xff-dir")
    os.mkdir(raw)
    with open(os.path.join(raw, b"f\xfe"), "wb") as handle:
        handle.write(b"content")
    cli.run("init")
    cli.run("backup", os.fsdecode(raw))
    summary = _backup(cli, os.fsdecode(raw))
    assert summary["files_unmodified"] == 1
    first, second = cli.snapshots()
    assert first["paths"] == [str(tmp_path) + "/data-\ufffd-dir"]
    assert second["parent"] == first["id"]
    target = tmp_path / "restore"
    cli.run("restore", "latest", "--target", target)
    restored = os.path.join(os.fsencode(target), raw.lstrip(b"/"), b"f\xfe")
    with open(restored, "rb") as handle:
        assert handle.read() == b"content"


def test_quiet_prints_nothing_on_success(cli: Cli, src: Path, tmp_path: Path) -> None:
    for args in (
        ("init",),
        ("backup", src),
        ("backup", src),
        ("check", "--read-data"),
        ("restore", "latest", "--target", tmp_path / "restore"),
        ("forget", "latest"),
        ("prune",),
        ("unlock",),
    ):
        proc = cli.run("-q", *args)
        assert (proc.stdout, proc.stderr) == ("", ""), args


def test_excludes_by_name_and_by_path(cli: Cli, src: Path, tmp_path: Path) -> None:
    cli.run("init")
    (src / "scratch.tmp").write_text("x")
    (src / "sub" / "deeper" / "nested.tmp").write_text("x")
    (src / "cache").mkdir()
    (src / "cache" / "blob").write_text("x")
    (src / "sub" / "cache").mkdir()  # same name, other place: the path pattern spares it
    (src / "sub" / "cache" / "keep").write_text("keep")
    cli.run("backup", src, "--exclude", "*.tmp", "--exclude", str(src / "cache"))
    listed = set(cli.run("ls", "latest").stdout.splitlines())
    base = str(src)
    assert not {p for p in listed if p.endswith(".tmp")}
    assert base + "/cache" not in listed and base + "/cache/blob" not in listed
    assert base + "/sub/cache/keep" in listed
    assert base + "/a.txt" in listed

    # a relative path pattern matches at any depth
    cli.run("backup", src, "-e", "deeper/*.txt")
    listed = set(cli.run("ls", "latest").stdout.splitlines())
    assert base + "/sub/deeper/c.txt" not in listed
    assert base + "/sub/deeper/nested.tmp" in listed
    assert base + "/cache/blob" in listed
