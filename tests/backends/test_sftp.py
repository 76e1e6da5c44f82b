"""The SFTP backend's own guarantees, against a real sshd on loopback (tests/sshserver.py):
location forms, host key checking, key-only authentication, atomic writes, reconnecting, and a
backup through the CLI that restic reads too. (The conformance suite runs it as "sftp".)"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest

from safehold.backends import open_backend
from safehold.backends.sftp import (
    ChangedHostKeyError,
    SftpAuthError,
    SftpBackend,
    SftpLocation,
    UnknownHostKeyError,
    _translate,
    parse_sftp_location,
)
from safehold.errors import (
    BackendError,
    BackendPermissionError,
    DiskFullError,
    RepositoryExistsError,
    UsageError,
)
from tests.conftest import TEST_PASSWORD, RunCli
from tests.sshserver import SshServer, free_port, keygen

KEY = "d4" * 32
PACK = "ab" + "b2" * 31

# ----- locations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("sftp:user@host:/srv/repo", SftpLocation("user", "host", 22, "/srv/repo")),
        ("sftp:user@host:relative/repo", SftpLocation("user", "host", 22, "relative/repo")),
        ("sftp:host:/srv/repo/", SftpLocation(None, "host", 22, "/srv/repo")),
        ("sftp:me@corp@host:/r", SftpLocation("me@corp", "host", 22, "/r")),
        ("sftp:user@[::1]:/r", SftpLocation("user", "::1", 22, "/r")),
        ("sftp://user@host:2222//srv/repo", SftpLocation("user", "host", 2222, "/srv/repo")),
        ("sftp://user@host/relative/repo", SftpLocation("user", "host", 22, "relative/repo")),
        ("sftp://host//srv/repo", SftpLocation(None, "host", 22, "/srv/repo")),
        ("sftp://user@[::1]:2200//r", SftpLocation("user", "::1", 2200, "/r")),
    ],
)
def test_location_forms(location: str, expected: SftpLocation) -> None:
    assert parse_sftp_location(location) == expected


@pytest.mark.parametrize(
    "location",
    [
        "sftp:host",  # no path
        "sftp:host:",
        "sftp:@host:/r",
        "sftp://user:secret@host//r",  # passwords are never accepted
        "sftp://user@host",
        "sftp://user@host:notaport//r",
        "sftp:user@host:~/repo",
    ],
)
def test_bad_locations(location: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_sftp_location(location)
    assert "secret" not in str(caught.value)


def test_location_string_has_no_secrets_and_round_trips() -> None:
    backend = SftpBackend("sftp:alice@example.org:/srv/repo")
    assert backend.location == "sftp://alice@example.org:22//srv/repo"
    assert parse_sftp_location(backend.location) == parse_sftp_location(
        "sftp:alice@example.org:/srv/repo"
    )


def test_open_backend_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHOLD_SFTP_IDENTITY", "/keys/id")
    monkeypatch.setenv("SAFEHOLD_SFTP_KNOWN_HOSTS", "/keys/known")
    backend = open_backend("sftp:u@h:/r")
    assert isinstance(backend, SftpBackend)
    assert (backend._identity, backend._known_hosts) == ("/keys/id", "/keys/known")


def test_error_mapping() -> None:
    assert isinstance(_translate(PermissionError(errno.EACCES, "x"), "w"), BackendPermissionError)
    assert isinstance(_translate(OSError(errno.ENOSPC, "x"), "w"), DiskFullError)
    assert isinstance(_translate(OSError("No space left on device"), "w"), DiskFullError)
    generic = _translate(OSError("Failure"), "keys/x")
    assert type(generic) is BackendError and "disk space" in generic.hint


# ----- host keys and authentication ---------------------------------------------------------


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True)
    return out.stdout.split()[1]


def test_unknown_host_key_is_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = sshd_server.backend(tmp_path / "repo", known_hosts=empty)
    with pytest.raises(UnknownHostKeyError) as caught:
        backend.exists()
    message, port = str(caught.value), sshd_server.port
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "unknown" in message
    assert _fingerprint(sshd_server.host_key.with_suffix(".pub")) in message
    assert f"ssh-keyscan -p {port} 127.0.0.1 >> {empty}" in caught.value.hint
    assert not (tmp_path / "repo").exists()
    assert empty.read_text() == ""  # never trusted on first use


def test_changed_host_key_is_refused_loudly(sshd_server: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "impostor")
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {blob}\n")
    backend = sshd_server.backend(tmp_path / "repo", known_hosts=known)
    with pytest.raises(ChangedHostKeyError) as caught:
        backend.create()
    message = str(caught.value)
    assert "CHANGED" in message and "man-in-the-middle" in message
    assert f"127.0.0.1:{sshd_server.port}" in message
    assert _fingerprint(sshd_server.host_key.with_suffix(".pub")) in message
    assert "ssh-keygen -R" in caught.value.hint
    assert not (tmp_path / "repo").exists()


def test_wrong_client_key_is_a_clear_auth_error(sshd_server: SshServer, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    backend = sshd_server.backend(tmp_path / "repo", identity_file=stranger)
    with pytest.raises(SftpAuthError) as caught:
        backend.exists()
    assert "authentication" in str(caught.value) and str(stranger) in str(caught.value)
    assert "authorized_keys" in caught.value.hint
    assert "password" in caught.value.hint


def test_missing_identity_file_is_a_usage_error(sshd_server: SshServer, tmp_path: Path) -> None:
    backend = sshd_server.backend(tmp_path / "repo", identity_file=tmp_path / "nope")
    with pytest.raises(UsageError, match="SSH identity file"):
        backend.exists()


def test_connection_refused_has_a_hint(sshd_server: SshServer, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    backend = SftpBackend(
        f"sftp://root@127.0.0.1:{port}//{tmp_path}",
        identity_file=sshd_server.client_key,
        known_hosts=sshd_server.known_hosts,
    )
    with pytest.raises(BackendError) as caught:
        backend.exists()
    assert f"127.0.0.1:{port}" in str(caught.value) and "refused" in str(caught.value)
    assert "port" in caught.value.hint


# ----- storage ------------------------------------------------------------------------------


def test_layout_atomic_writes_and_temp_files(sshd_server: SshServer, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    backend = sshd_server.backend(root)
    backend.create()
    assert sorted(p.name for p in root.iterdir()) == ["data", "index", "keys", "locks", "snapshots"]
    assert sorted(p.name for p in (root / "data").iterdir()) == [f"{n:02x}" for n in range(256)]
    backend.put(f"data/ab/{PACK}", [b"pa", b"", b"ck"])
    backend.put("safehold/drills/x.json", b"{}")  # parent folders made on demand
    assert (root / "data" / "ab" / PACK).read_bytes() == b"pack"
    assert stat.S_IMODE(os.stat(root / "data" / "ab" / PACK).st_mode) == 0o400
    assert [p for p in root.rglob(".tmp-*")] == []
    (root / "keys" / ".tmp-interrupted").write_bytes(b"half")
    assert [info.name for info in backend.list("keys/")] == []
    (root / "keys" / KEY).mkdir()  # renaming onto a folder fails: no temp file stays behind
    with pytest.raises(BackendError):
        backend.put(f"keys/{KEY}", b"x")
    assert [p.name for p in root.rglob(".tmp-*")] == [".tmp-interrupted"]


def test_create_refuses_a_non_empty_folder(sshd_server: SshServer, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep-me").write_text("mine")
    with pytest.raises(RepositoryExistsError):
        sshd_server.backend(tmp_path / "repo").create()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["keep-me"]


def test_reconnects_after_a_dropped_connection(sshd_server: SshServer, tmp_path: Path) -> None:
    backend = sshd_server.backend(tmp_path / "repo")
    backend.create()
    backend.put(f"keys/{KEY}", b"before")
    backend._client.get_transport().close()  # the connection dies under the backend
    assert backend.get(f"keys/{KEY}") == b"before"
    backend._client.get_transport().close()
    backend.put(f"data/ab/{PACK}", b"after")
    assert backend.stat(f"data/ab/{PACK}").size == 5


def test_create_finishes_after_the_connection_drops_halfway(
    sshd_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    backend = sshd_server.backend(root)
    original = paramiko.SFTPClient.mkdir
    made: list[str] = []

    def mkdir(self: Any, path: str, mode: int = 0o777) -> None:
        made.append(path)
        if len(made) == 40:  # the connection dies in the middle of the layout
            backend._client.get_transport().close()
        original(self, path, mode)

    monkeypatch.setattr(paramiko.SFTPClient, "mkdir", mkdir)
    backend.create()  # the retry finds its own half-made layout and completes it
    assert len(made) > 40 + 256
    assert sorted(p.name for p in (root / "data").iterdir()) == [f"{n:02x}" for n in range(256)]
    with pytest.raises(RepositoryExistsError):  # a second create still refuses
        sshd_server.backend(root).create()


# ----- through the CLI, and restic reading the same repository ------------------------------


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_cli_backup_and_restore_over_sftp(
    sshd_server: SshServer, run_cli: RunCli, tmp_path: Path, restic_bin: str
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(3_000_000))
    (src / "sub" / "empty").write_bytes(b"")
    repo_path = tmp_path / "repo"
    location = sshd_server.location(repo_path)
    env = sshd_server.env()

    def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        proc = run_cli("-r", location, *map(str, args), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    assert "created repository" in cli("init").stdout
    assert (repo_path / "config").is_file()
    cli("backup", src)
    target = tmp_path / "restored"
    cli("restore", "latest", "--target", target)
    assert _digest(target / str(src).lstrip("/")) == _digest(src)
    assert [p for p in repo_path.rglob(".tmp-*")] == []

    # without the pinned known_hosts the CLI refuses, with a one-line message and the fix
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = run_cli(
        "-r", location, "snapshots", env={**env, "SAFEHOLD_SFTP_KNOWN_HOSTS": str(empty)}
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown SSH host key" in proc.stderr and "ssh-keyscan" in proc.stderr

    # restic reads the very same repository over its own sftp backend (ssh + the same key)
    ssh_args = (
        f"-i {sshd_server.client_key} -o UserKnownHostsFile={sshd_server.known_hosts} "
        "-o BatchMode=yes -o IdentitiesOnly=yes"
    )
    restic = subprocess.run(
        [restic_bin, "-r", f"sftp:root@127.0.0.1:{repo_path}", "-o",
         f"sftp.command=ssh root@127.0.0.1 -p {sshd_server.port} {ssh_args} -s sftp",
         "snapshots", "--json", "--no-lock"],
        env={**os.environ, "RESTIC_PASSWORD": TEST_PASSWORD, "RESTIC_CACHE_DIR":
             str(tmp_path / "restic-cache")},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert restic.returncode == 0, restic.stderr
    assert str(src) in restic.stdout
