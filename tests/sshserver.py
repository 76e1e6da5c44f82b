"""A throwaway OpenSSH server on a random loopback port, for the SFTP backend's tests.

`sshd_server` is a session fixture (import it in a conftest.py). The server is started once per
test process, lazily, also when a conformance factory asks for it first (`shared_sshd()`), and
stopped (by its pid) and deleted when the session ends, also when the start failed halfway.

It has its own ed25519 host key and one authorized ed25519 client key; `known_hosts` pins the
host key. Root logs in by key only (StrictModes off: the keys live under /tmp). Skipped only when
/usr/sbin/sshd is missing; scripts/test-all.sh installs openssh-server.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keygen(path: Path, comment: str = "safehold-test") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    return path


class SshServer:
    host = "127.0.0.1"
    user = "root"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.host_key = root / "host_ed25519"
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.backends: list[Any] = []  # closed at stop

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)
        os.chmod("/run/sshd", 0o755)
        keygen(self.host_key, "host")
        keygen(self.client_key, "client")
        shutil.copy(self.client_key.with_suffix(".pub"), self.root / "authorized_keys")
        public = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {public[0]} {public[1]}\n")
        self.config.write_text(
            f"Port {self.port}\nListenAddress {self.host}\nHostKey {self.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp internal-sftp\nMaxSessions 20\nMaxStartups 50\n"
            "LogLevel VERBOSE\n" + self._extra_config()
        )
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t failed: {check.stderr}")
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection((self.host, self.port), 0.5) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not come up: {self.log.read_text(errors='replace')}")

    def _extra_config(self) -> str:
        """More sshd_config lines (Match blocks must come last)."""
        return ""

    def location(self, path: Path | str) -> str:
        """`sftp://root@127.0.0.1:PORT//abs/path` for an absolute path on this machine."""
        return f"sftp://{self.user}@{self.host}:{self.port}/{path}"

    def backend(self, path: Path | str, **options: Any) -> Any:
        """An SftpBackend for `path`, pinned to this server's keys (closed at session end)."""
        from safehold.backends.sftp import SftpBackend

        options.setdefault("identity_file", self.client_key)
        options.setdefault("known_hosts", self.known_hosts)
        backend = SftpBackend(self.location(path), **options)
        self.backends.append(backend)
        return backend

    def env(self) -> dict[str, str]:
        return {
            "SAFEHOLD_SFTP_IDENTITY": str(self.client_key),
            "SAFEHOLD_SFTP_KNOWN_HOSTS": str(self.known_hosts),
        }

    def stop(self) -> None:
        for backend in self.backends:
            with contextlib.suppress(Exception):
                backend.close()
        self.backends.clear()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# What a write-only account's sftp-server refuses (docs/offsite.md): removing files and folders
# (remove, rmdir), renaming, which could replace or move a stored file (rename, posix-rename),
# and changing attributes, which could make a stored read-only file writable or truncate it
# (setstat, fsetstat, lsetstat). Creating files and folders, writing new files, reading,
# listing, fsync and hardlink@openssh.com (which never replaces a name) stay allowed.
WRITE_ONLY_DENIED = "remove,rmdir,rename,posix-rename,setstat,fsetstat,lsetstat"


class WriteOnlySshServer(SshServer):
    """An sshd with the write-only SFTP account docs/offsite.md describes, on its own port.

    The account is an unprivileged user (`nobody`: root would bypass file permissions), chrooted
    to `chroot` (root-owned, 0755; outside /tmp, since sshd refuses a chroot path with a
    world-writable component) and allowed two keys, in a root-owned authorized_keys file it
    cannot change:

    * `backup_key`: `restrict,command="internal-sftp -P WRITE_ONLY_DENIED"`, the production key;
    * `maintenance_key`: `restrict,command="internal-sftp"`, for prune (it may delete).

    `folder(name)` makes a fresh folder for a test, owned by the account; repository locations
    are paths inside the chroot (`/name/repo`). The chroot lives in /run (removed at stop).
    """

    user = "nobody"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.jail = Path(tempfile.mkdtemp(prefix="safehold-sftp-", dir="/run"))
        self.chroot = self.jail / "chroot"
        self.account_keys = self.jail / "authorized_keys"
        self.backup_key = root / "backup_ed25519"
        self.maintenance_key = root / "maintenance_ed25519"
        self.uid, self.gid = pwd.getpwnam(self.user)[2:4]

    def _extra_config(self) -> str:
        os.chmod(self.jail, 0o755)
        self.chroot.mkdir(mode=0o755)
        keygen(self.backup_key, "backup")
        keygen(self.maintenance_key, "maintenance")
        backup = self.backup_key.with_suffix(".pub").read_text().strip()
        maintenance = self.maintenance_key.with_suffix(".pub").read_text().strip()
        self.account_keys.write_text(
            f'restrict,command="internal-sftp -P {WRITE_ONLY_DENIED}" {backup}\n'
            f'restrict,command="internal-sftp" {maintenance}\n'
        )
        self.account_keys.chmod(0o644)  # sshd reads it as the account
        return (
            f"Match User {self.user}\n"
            f"    ChrootDirectory {self.chroot}\n"
            f"    AuthorizedKeysFile {self.account_keys}\n"
            "    AllowTcpForwarding no\n    X11Forwarding no\n    PermitTTY no\n"
        )

    def folder(self, name: str) -> Path:
        """A fresh folder `/name` in the chroot, owned by the account (its path on this host)."""
        path = self.chroot / name
        path.mkdir(mode=0o700)
        os.chown(path, self.uid, self.gid)
        return path

    def env(self, key: str = "backup") -> dict[str, str]:
        identity = self.backup_key if key == "backup" else self.maintenance_key
        return {
            "SAFEHOLD_SFTP_IDENTITY": str(identity),
            "SAFEHOLD_SFTP_KNOWN_HOSTS": str(self.known_hosts),
        }

    def backend(self, path: Path | str, **options: Any) -> Any:
        options.setdefault("identity_file", self.backup_key)
        return super().backend(path, **options)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.jail, ignore_errors=True)


@contextlib.contextmanager
def write_only_sshd() -> Iterator[WriteOnlySshServer]:
    """Start a WriteOnlySshServer; stop and delete it afterwards (use it in a module fixture)."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: install openssh-server (scripts/test-all.sh does)")
    root = Path(tempfile.mkdtemp(prefix="safehold-sshd-wo-"))
    server: WriteOnlySshServer | None = None
    try:
        server = WriteOnlySshServer(root)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


_shared: SshServer | None = None
_shared_lock = threading.Lock()


def _stop_shared() -> None:
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


def shared_sshd() -> SshServer:
    """The process-wide server, started on first use (skips the test if sshd is missing)."""
    global _shared
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: install openssh-server (scripts/test-all.sh does)")
    with _shared_lock:
        if _shared is None:
            root = Path(tempfile.mkdtemp(prefix="safehold-sshd-"))
            server = SshServer(root)
            try:
                server.start()
            except BaseException:
                server.stop()
                shutil.rmtree(root, ignore_errors=True)
                raise
            _shared = server
            atexit.register(_stop_shared)
        return _shared


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[SshServer]:
    try:
        yield shared_sshd()
    finally:
        _stop_shared()
