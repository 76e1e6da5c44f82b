"""A write-only SFTP account (docs/offsite.md, "SFTP: an account that cannot delete"): a real
sshd whose internal-sftp denies remove, rmdir, rename, posix-rename and the setstat family to
the production key, for an unprivileged account in a chroot.

Proven here: `init`, `backup` and `copy` work through that key; the server refuses it every
delete, rename, in-place write, truncation and chmod of what is stored, and a hardlink onto a
stored name; after all those attempts every stored byte is unchanged, and both safehold and
restic check the repository (reading all data). The maintenance key prunes, and its deletes
free the space (the second names the write-only key had to leave go with the objects).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from safehold.backends.base import DeleteRefusedError
from safehold.errors import BackendError
from tests.conftest import TEST_PASSWORD, RunCli
from tests.sshserver import WriteOnlySshServer, write_only_sshd

OTHER_PASSWORD = "the local repository's own passphrase 7"


@pytest.fixture(scope="module")
def server() -> Iterator[WriteOnlySshServer]:
    with write_only_sshd() as started:
        yield started


class Cli:
    """`safehold -r LOCATION ...` with one SSH key; asserts the exit code."""

    def __init__(self, run_cli: RunCli, location: str, env: dict[str, str]) -> None:
        self.run_cli, self.location, self.env = run_cli, location, env

    def __call__(
        self, *args: str | Path, expect: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = self.run_cli("-r", self.location, *map(str, args), env={**self.env, **(env or {})})
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        assert (proc.returncode == 0) == (expect == 0), f"{args}\n{proc.stdout}\n{proc.stderr}"
        return proc


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(2_500_000))
    return src


def _stored(repo: Path) -> dict[str, Path]:
    """Every stored object by its repository name (the `.tmp-*` second names left out)."""
    return {
        str(path.relative_to(repo)): path
        for path in sorted(repo.rglob("*"))
        if path.is_file() and not path.name.startswith(".tmp-")
    }


def _digests(repo: Path) -> dict[str, str]:
    return {
        str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(repo.rglob("*"))
        if path.is_file()
    }


def _sftp(server: WriteOnlySshServer, key: Path) -> tuple[Any, Any]:
    """A raw paramiko SFTP session as the account with `key` (what an attacker would use)."""
    client = paramiko.SSHClient()
    client.get_host_keys().load(str(server.known_hosts))
    client.connect(
        server.host, port=server.port, username=server.user, key_filename=str(key),
        look_for_keys=False, allow_agent=False, timeout=20,
    )  # fmt: skip
    return client, client.open_sftp()


def _refused(request: Callable[..., object], *arguments: object) -> None:
    """The server answers `request(*arguments)` with SSH_FX_PERMISSION_DENIED."""
    with pytest.raises(PermissionError):
        request(*arguments)


def _hardlink(sftp: Any, source: str, target: str) -> None:
    sftp._request(paramiko.sftp.CMD_EXTENDED, "hardlink@openssh.com", source, target)


def _restic_check(server: WriteOnlySshServer, restic: str, path: str, tmp_path: Path) -> None:
    """`restic check --read-data` over restic's own sftp backend, with the production key
    (--no-lock: restic would have to delete its lock file again)."""
    ssh = (
        f"ssh {server.user}@{server.host} -p {server.port} -i {server.backup_key} "
        f"-o UserKnownHostsFile={server.known_hosts} -o BatchMode=yes -o IdentitiesOnly=yes "
        "-s sftp"
    )
    proc = subprocess.run(
        [restic, "-r", f"sftp:{server.user}@{server.host}:{path}", "-o", f"sftp.command={ssh}",
         "check", "--read-data", "--no-lock"],
        env={**os.environ, "RESTIC_PASSWORD": TEST_PASSWORD,
             "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no errors were found" in proc.stdout


def test_backup_and_copy_work_and_nothing_stored_can_be_deleted_or_overwritten(
    server: WriteOnlySshServer, run_cli: RunCli, tmp_path: Path, restic_bin: str
) -> None:
    repo = server.folder("production") / "repo"
    cli = Cli(run_cli, server.location("/production/repo"), server.env("backup"))
    src = _source(tmp_path)
    assert "created repository" in cli("init").stdout
    cli("backup", src)
    (src / "b.txt").write_text("bravo\n")
    cli("backup", src)  # the first backup's lock is still there: stale, its process has ended
    local = tmp_path / "local"
    other = {"SAFEHOLD_PASSWORD": OTHER_PASSWORD}
    for args in (("init",), ("backup", str(src), "--note", "from elsewhere")):
        assert run_cli("-r", str(local), *args, env=other).returncode == 0
    cli("copy", "--from-repo", local, env={"SAFEHOLD_FROM_PASSWORD": OTHER_PASSWORD})
    snapshots = json.loads(cli("snapshots", "--json").stdout)
    assert len(snapshots) == 3

    stored = _stored(repo)
    # every stored file is read-only and the account's: it can never make it writable again
    for path in stored.values():
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o400 and info.st_uid == server.uid, path
    # the locks stay (the account may not remove them), and so do the temp names: each is a
    # second name of a stored file (same inode), never a copy
    assert [name for name in stored if name.startswith("locks/")]
    leftovers = [path for path in repo.rglob(".tmp-*")]
    assert leftovers
    for leftover in leftovers:
        final = leftover.with_name(leftover.name.removeprefix(".tmp-"))
        assert leftover.stat().st_ino == final.stat().st_ino and final.stat().st_nlink == 2

    before = _digests(repo)
    names = {
        kind: next(name for name in stored if name.startswith(kind))
        for kind in ("config", "keys/", "data/", "index/", "snapshots/")
    }
    client, sftp = _sftp(server, server.backup_key)
    try:
        garbage = "/production/repo/garbage"
        with sftp.open(garbage, "wx") as handle:  # creating new files stays possible
            handle.write(b"not a backup")

        for name in names.values():
            path = f"/production/repo/{name}"
            _refused(sftp.remove, path)
            _refused(sftp.rename, path, path + "-moved")
            _refused(sftp.posix_rename, garbage, path)
            _refused(sftp.open, path, "r+")  # write in place
            _refused(sftp.open, path, "w")  # truncate and write
            _refused(sftp.truncate, path, 0)
            _refused(sftp.chmod, path, 0o600)
            with pytest.raises(OSError, match="Failure"):  # the name exists: no replacing
                _hardlink(sftp, garbage, path)
        _refused(sftp.rmdir, "/production/repo/data/00")
        _refused(sftp.remove, garbage)
    finally:
        client.close()

    # safehold itself, with the same key: a clear refusal, nothing removed
    with pytest.raises(DeleteRefusedError, match="refused to delete"):
        server.backend("/production/repo").delete(names["snapshots/"])
    proc = cli("forget", "--force", snapshots[0]["id"], expect=1)
    assert "refused to delete" in proc.stderr and "maintenance" in proc.stderr

    after = _digests(repo)
    assert {name: after.get(name) for name in before} == before  # every byte as it was
    assert len(json.loads(cli("snapshots", "--json").stdout)) == 3
    assert "no errors were found" in cli("check", "--read-data").stdout
    _restic_check(server, restic_bin, "/production/repo", tmp_path)


def test_the_maintenance_key_prunes_what_the_backup_key_wrote_and_frees_it(
    server: WriteOnlySshServer, run_cli: RunCli, tmp_path: Path
) -> None:
    repo = server.folder("pruned") / "repo"
    location = server.location("/pruned/repo")
    backup = Cli(run_cli, location, server.env("backup"))
    maintenance = Cli(run_cli, location, server.env("maintenance"))
    src = _source(tmp_path)
    backup("init")
    backup("backup", src)
    (src / "sub" / "big.bin").write_bytes(os.urandom(2_500_000))  # the first one's data goes
    backup("backup", src)
    packs_before = {name for name in _stored(repo) if name.startswith("data/")}
    for name in packs_before:  # written through the write-only key: each has a second name
        assert (repo / name).with_name(".tmp-" + name.rsplit("/", 1)[1]).exists()

    maintenance("forget", "--keep-last", "1", "--force", "--prune")
    maintenance("unlock")  # the locks the backup key had to leave
    stored = _stored(repo)
    assert len(json.loads(maintenance("snapshots", "--json").stdout)) == 1
    gone = packs_before - set(stored)
    assert gone  # unreferenced packs are deleted, and their second names with them
    for name in gone:
        assert not (repo / name).with_name(".tmp-" + name.rsplit("/", 1)[1]).exists()
    assert not [name for name in stored if name.startswith("locks/")]
    # and with them their second names: no temp name is the last link to any data
    for leftover in repo.rglob(".tmp-*"):
        assert leftover.with_name(leftover.name.removeprefix(".tmp-")).exists(), leftover
    assert "no errors were found" in backup("check", "--read-data").stdout


PACK = "ab" + "0" * 62


def test_backend_on_a_write_only_account(server: WriteOnlySshServer) -> None:
    """SftpBackend's write-only paths, one by one."""
    repo = server.folder("unit") / "repo"
    backend = server.backend("/unit/repo")
    backend.create()
    name = f"data/ab/{PACK}"
    interrupted = repo / "data" / "ab" / f".tmp-{PACK}"  # an upload cut off before its link
    interrupted.write_bytes(b"pa")
    backend.put(name, [b"pa", b"ck"])
    assert (repo / name).read_bytes() == b"pack" and interrupted.read_bytes() == b"pa"
    backend.put(name, b"pack")  # a retried upload whose first try landed: nothing to do
    with pytest.raises(BackendError, match="already exists with 4 bytes"):
        backend.put(name, b"other bytes")  # never replaced
    assert (repo / name).read_bytes() == b"pack"
    assert [info.name for info in backend.list("data/")] == [name]  # temp names are not listed
    backend.put("locks/" + PACK, b"lock")
    backend.delete("locks/" + PACK)  # refused by the server: the lock stays, no error
    assert (repo / "locks" / PACK).exists()
    with pytest.raises(DeleteRefusedError, match="refused to delete") as caught:
        backend.delete(name)
    assert "maintenance credentials" in (caught.value.hint or "") and (repo / name).exists()
