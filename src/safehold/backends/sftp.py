"""A repository on an SSH server over SFTP, laid out exactly as restic's sftp backend lays it out.

Locations (restic's forms)::

    sftp:user@host:/abs/path          sftp:user@host:relative/path   (relative to the login dir)
    sftp://user@host:port//abs/path   sftp://user@host/relative/path

Authentication is by key only, never by password: the key in `identity_file` (the CLI reads
SAFEHOLD_SFTP_IDENTITY), else the SSH agent and the default keys in ~/.ssh. The server's host
key must already be in `known_hosts` (the CLI reads SAFEHOLD_SFTP_KNOWN_HOSTS), else in
~/.ssh/known_hosts: an unknown key is refused (with its fingerprint and the `ssh-keyscan`
command to trust it), a changed key is refused loudly (possible man-in-the-middle).

Writes are atomic: `<dir>/.tmp-<name>` (with a random suffix when an interrupted upload left
that name), created read-only (0400, by the server, in the open request itself), then
posix-rename@openssh.com; listing skips `.tmp-*`. Transfers run over a small pool of SFTP
channels on one SSH connection, so several threads may write packs at once; a dropped
connection is re-established once per operation.

Write-only accounts (docs/offsite.md): when the server refuses posix-rename (OpenSSH
`internal-sftp -P remove,rmdir,rename,posix-rename,setstat,fsetstat,lsetstat`), the temp file
is published with hardlink@openssh.com instead (else a plain rename): both refuse to replace an
existing name, so nothing stored can be overwritten, and the temp name, which such an account
may not remove, stays behind as a second name of the same file (no extra space; listing skips
it; delete() removes `.tmp-<name>` with `<name>`). Lock files such an account may not remove
are left in place (they go stale); any other refused delete is a DeleteRefusedError.

Note: SFTP (version 3, OpenSSH) reports "disk full" only as a generic failure, so a failed write
is a BackendError whose hint mentions free space; a server that names the cause (ENOSPC, quota,
"no space") gives DiskFullError.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import errno
import getpass
import hashlib
import posixpath
import secrets
import socket
import stat as stat_module
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import paramiko  # type: ignore[import-untyped]

from safehold.backends.base import (
    LOCKS_PREFIX,
    Capabilities,
    DeleteRefusedError,
    FileInfo,
    ObjectData,
    ObjectNotFoundError,
)
from safehold.errors import (
    BackendError,
    BackendPermissionError,
    DiskFullError,
    RepositoryExistsError,
    SafeholdError,
    UsageError,
)

__all__ = [
    "ChangedHostKeyError",
    "SftpAuthError",
    "SftpBackend",
    "SftpLocation",
    "UnknownHostKeyError",
    "parse_sftp_location",
]

_TOP_DIRS = ("data", "index", "keys", "locks", "snapshots")
_TMP_PREFIX = ".tmp-"
FILE_MODE = 0o400  # read-only: an account without setstat can never modify a stored file
DEFAULT_PORT = 22
MAX_SESSIONS = 4
CONNECT_TIMEOUT = 20.0
IO_TIMEOUT = 300.0

T = TypeVar("T")


class UnknownHostKeyError(BackendError):
    """The server's host key is in no known_hosts file: refused (trust on first use is off)."""


class ChangedHostKeyError(BackendError):
    """The server's host key differs from the one recorded: refused (possible attack)."""


class SftpAuthError(BackendError):
    """The server refused every key offered."""


# ----- locations --------------------------------------------------------------------------


@dataclass(frozen=True)
class SftpLocation:
    user: str | None
    host: str
    port: int
    path: str  # absolute, or relative to the login directory

    def display(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = self.path if self.path.startswith("/") else "/" + self.path
        return f"sftp://{user}{host}:{self.port}/{path}"


def _clean_path(raw: str, location: str) -> str:
    if not raw:
        raise UsageError(
            f"no path in sftp location {location!r}",
            hint="use sftp:user@host:/path/to/repo or sftp://user@host:port//path/to/repo",
        )
    path = posixpath.normpath(raw)
    if path.startswith("~"):
        raise UsageError(
            f"sftp path {raw!r} starts with ~, which SFTP does not expand",
            hint="use a path relative to the login directory (sftp:user@host:repo) instead",
        )
    return path


def parse_sftp_location(location: str) -> SftpLocation:
    """Parse restic's sftp location forms (see the module docstring)."""
    bad_form = "use sftp:user@host:/path/to/repo or sftp://user@host:port//path/to/repo"
    if location.startswith("sftp://"):
        parts = urlsplit(location)
        if parts.password is not None:
            raise UsageError(
                "passwords are not accepted in an sftp location",
                hint="use key authentication (SAFEHOLD_SFTP_IDENTITY or the SSH agent)",
            )
        if not parts.hostname:
            raise UsageError(f"no host in sftp location {location!r}", hint=bad_form)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise UsageError(f"invalid port in sftp location {location!r}", hint=bad_form) from None
        user = unquote(parts.username) if parts.username else None
        return SftpLocation(user, parts.hostname, port, _clean_path(parts.path[1:], location))
    if not location.startswith("sftp:"):
        raise UsageError(f"not an sftp location: {location!r}", hint=bad_form)
    rest = location[len("sftp:") :]
    opening, closing = rest.find("["), rest.find("]")
    if 0 <= opening < closing and (opening == 0 or rest[opening - 1] == "@"):
        # sftp:user@[::1]:/path (an IPv6 address in brackets)
        user_host, after = rest[: closing + 1], rest[closing + 1 :]
        colon, path = after[:1], after[1:]
    else:
        user_host, colon, path = rest.partition(":")
    if colon != ":":
        raise UsageError(f"no host or path in sftp location {location!r}", hint=bad_form)
    user, at, host = user_host.rpartition("@")
    if at and not user:
        raise UsageError(f"empty user in sftp location {location!r}", hint=bad_form)
    host = host.removeprefix("[").removesuffix("]")
    if not host:
        raise UsageError(f"no host in sftp location {location!r}", hint=bad_form)
    return SftpLocation(user if at else None, host, DEFAULT_PORT, _clean_path(path, location))


# ----- host keys --------------------------------------------------------------------------


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(cast(bytes, key.asbytes())).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    def __init__(self, port: int, known_hosts: str) -> None:
        self.port = port
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        host = hostname
        if host.startswith("[") and "]:" in host:  # paramiko passes "[host]:port" for port != 22
            host = host[1 : host.index("]:")]
        label = _host_label(host, self.port)
        raise UnknownHostKeyError(
            f"unknown SSH host key for {label} ({key.get_name()} {fingerprint(key)}): "
            f"refusing to connect",
            hint=(
                f"verify that fingerprint with the server's admin, then run "
                f"`ssh-keyscan -p {self.port} {host} >> {self.known_hosts}`"
            ),
        )


# ----- error mapping ----------------------------------------------------------------------


def _translate(err: BaseException, what: str) -> BackendError:
    if isinstance(err, BackendError):
        return err
    text = str(err)
    lowered = text.lower()
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "no space" in lowered or "quota" in lowered:
        return DiskFullError(f"disk full on the server while writing {what}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "permission denied" in lowered:
        return BackendPermissionError(
            f"permission denied on {what}",
            hint="check the permissions of the repository folder for the SSH user",
        )
    return BackendError(
        f"SFTP error on {what}: {text or type(err).__name__}",
        hint="check the server (free disk space, permissions) and retry",
    )


def _is_missing(err: BaseException) -> bool:
    return isinstance(err, FileNotFoundError) or getattr(err, "errno", None) == errno.ENOENT


def _temp_name(path: str) -> str:
    """Where put() writes `path` first; a write-only account leaves it as a second name."""
    return posixpath.join(posixpath.dirname(path), _TMP_PREFIX + posixpath.basename(path))


def _is_refused(err: BaseException) -> bool:
    """SSH_FX_PERMISSION_DENIED: also what OpenSSH's sftp-server answers to a request that its
    `-P` option denies."""
    return getattr(err, "errno", None) == errno.EACCES


def _is_unsupported(err: BaseException) -> bool:
    return "unsupported" in str(err).lower()


# ----- the backend ------------------------------------------------------------------------


class SftpBackend:
    """Backend over SFTP; thread safe (a pool of up to `max_sessions` SFTP channels)."""

    def __init__(
        self,
        location: str | SftpLocation,
        *,
        identity_file: str | Path | None = None,
        known_hosts: str | Path | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._spec = parse_sftp_location(location) if isinstance(location, str) else location
        self._user = self._spec.user or getpass.getuser()
        self.root = self._spec.path
        self._identity = str(Path(identity_file).expanduser()) if identity_file else None
        self._known_hosts = str(Path(known_hosts).expanduser()) if known_hosts else None
        self._lock = threading.Lock()
        self._max_sessions = max(1, max_sessions)
        self._slots = threading.BoundedSemaphore(self._max_sessions)
        self._client: Any = None
        self._generation = 0
        self._idle: list[tuple[int, Any]] = []
        self._closed = False
        self._write_only = False  # the server refused posix-rename: link, never rename

    # -- plumbing ------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._spec.display()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def after_fork(self) -> None:
        """Forget the parent's connection and sessions without closing them (that would
        talk on the parent's socket); the next call connects anew. Not `forkable`: an SSH
        handshake per worker process costs more than the workers bring a restore. The
        parent's connection objects are kept, unused, so that nothing closes them here."""
        self._parents_connection = (self._client, self._idle)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._max_sessions)
        self._client = None
        self._idle = []
        self._generation += 1

    def cleanup_temp_files(self) -> int:
        """Not done over SFTP: listing skips `.tmp-*` leftovers and delete() removes `.tmp-<name>`
        with `<name>`; a write-only account could not remove them anyway."""
        return 0

    @property
    def _label(self) -> str:
        return _host_label(self._spec.host, self._spec.port)

    def _connect(self) -> Any:
        spec = self._spec
        client = paramiko.SSHClient()
        if self._known_hosts is not None:
            hosts_file = self._known_hosts
            if not Path(hosts_file).is_file():
                raise UsageError(
                    f"known_hosts file {hosts_file} does not exist",
                    hint="check SAFEHOLD_SFTP_KNOWN_HOSTS",
                )
        else:
            hosts_file = str(Path("~/.ssh/known_hosts").expanduser())
        with contextlib.suppress(FileNotFoundError):
            client.get_host_keys().load(hosts_file)  # not load_host_keys: that one saves
        client.set_missing_host_key_policy(_RefuseUnknownHostKey(spec.port, hosts_file))
        if self._identity is not None and not Path(self._identity).is_file():
            raise UsageError(
                f"SSH identity file {self._identity} does not exist",
                hint="check SAFEHOLD_SFTP_IDENTITY",
            )
        try:
            client.connect(
                spec.host,
                port=spec.port,
                username=self._user,
                key_filename=self._identity,
                look_for_keys=self._identity is None,
                allow_agent=self._identity is None,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
            )
        except BaseException as err:
            client.close()
            raise self._connect_error(err) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    def _connect_error(self, err: BaseException) -> BaseException:
        label, who = self._label, f"{self._user}@{self._label}"
        if isinstance(err, SafeholdError):
            return err
        if isinstance(err, paramiko.BadHostKeyException):
            return ChangedHostKeyError(
                f"WARNING: THE SSH HOST KEY OF {label} HAS CHANGED "
                f"(server sent {err.key.get_name()} {fingerprint(err.key)}, known_hosts has "
                f"{fingerprint(err.expected_key)}): someone could be eavesdropping "
                f"(man-in-the-middle attack), refusing to connect",
                hint=(
                    "if the server's key was replaced on purpose, verify the new fingerprint "
                    f"with its admin, then remove the old entry (`ssh-keygen -R "
                    f"'[{self._spec.host}]:{self._spec.port}'`) and add the new one"
                ),
            )
        if isinstance(err, paramiko.PasswordRequiredException):
            return SftpAuthError(
                f"SSH key {self._identity or '(default)'} is encrypted; safehold never asks for "
                f"a passphrase",
                hint="load the key into ssh-agent (`ssh-add KEY`) and unset SAFEHOLD_SFTP_IDENTITY",
            )
        if isinstance(err, paramiko.AuthenticationException):
            source = (
                f"the key {self._identity}"
                if self._identity
                else "the SSH agent's keys and ~/.ssh/id_*"
            )
            return SftpAuthError(
                f"SSH authentication as {who} failed: the server refused {source}",
                hint=(
                    "add the public key to the server's ~/.ssh/authorized_keys, or point "
                    "SAFEHOLD_SFTP_IDENTITY at the right private key (passwords are not supported)"
                ),
            )
        if (
            isinstance(err, paramiko.SSHException)
            and "no authentication methods" in str(err).lower()
        ):
            return SftpAuthError(
                f"SSH authentication as {who} failed: no key to offer "
                "(no SSH agent, no ~/.ssh/id_*)",
                hint="set SAFEHOLD_SFTP_IDENTITY to a private key file, or load one into ssh-agent",
            )
        if isinstance(err, paramiko.SSHException) and "private key" in str(err).lower():
            return SftpAuthError(
                f"cannot read SSH key {self._identity}: {err}",
                hint="SAFEHOLD_SFTP_IDENTITY must name an unencrypted OpenSSH private key",
            )
        if isinstance(err, socket.gaierror):
            return BackendError(
                f"cannot resolve SSH host {self._spec.host!r}: {err.strerror}",
                hint="check the host name in the repository location",
            )
        refused = (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)
        if isinstance(err, refused):
            return BackendError(
                f"cannot connect to {label}: connection refused",
                hint="check the host and port in the repository location and that sshd runs there",
            )
        if isinstance(err, TimeoutError | socket.timeout):
            return BackendError(
                f"timed out connecting to {label}",
                hint="check the host, the port and any firewall in between",
            )
        if isinstance(err, OSError | paramiko.SSHException | EOFError):
            return BackendError(
                f"SSH connection to {label} failed: {err or type(err).__name__}",
                hint="check that an SSH server with the sftp subsystem runs there",
            )
        return err

    def _alive(self, generation: int) -> bool:
        client = self._client
        if client is None or generation != self._generation:
            return False
        transport = client.get_transport()
        return transport is not None and bool(transport.is_active())

    def _acquire(self) -> tuple[int, Any]:
        if self._closed:
            raise BackendError(f"{self.location} is closed")
        self._slots.acquire()
        try:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                    self._generation += 1
                while self._idle:
                    generation, sftp = self._idle.pop()
                    if generation == self._generation:
                        return generation, sftp
                    with contextlib.suppress(Exception):
                        sftp.close()
                try:
                    sftp = self._client.open_sftp()
                except paramiko.SSHException as err:
                    raise BackendError(
                        f"cannot start SFTP on {self._label}: {err}",
                        hint="the server must enable the sftp subsystem",
                    ) from None
                sftp.get_channel().settimeout(IO_TIMEOUT)
                return self._generation, sftp
        except BaseException:
            self._slots.release()
            raise

    def _release(self, generation: int, sftp: Any, healthy: bool) -> None:
        try:
            with self._lock:
                if healthy and self._alive(generation):
                    self._idle.append((generation, sftp))
                    return
            with contextlib.suppress(Exception):
                sftp.close()
        finally:
            self._slots.release()

    def _drop_connection(self, generation: int) -> None:
        """Forget a dead connection (once, whichever thread notices first)."""
        with self._lock:
            if generation != self._generation or self._client is None:
                return
            client, self._client = self._client, None
            idle, self._idle = self._idle, []
        for _, sftp in idle:
            with contextlib.suppress(Exception):
                sftp.close()
        with contextlib.suppress(Exception):
            client.close()

    def _run(self, what: str, operation: Callable[[Any], T]) -> T:
        """Run `operation(sftp)` on a pooled channel; reconnect once if the connection died."""
        for attempt in (1, 2):
            generation, sftp = self._acquire()
            healthy = False
            try:
                result = operation(sftp)
                healthy = True
                return result
            except (SafeholdError, ValueError):
                healthy = True
                raise
            except Exception as err:
                if _is_missing(err) or self._alive(generation):
                    healthy = True
                    raise _translate(err, what) from None
                self._drop_connection(generation)
                if attempt == 2:
                    raise BackendError(
                        f"lost the SSH connection to {self._label} during {what}: "
                        f"{err or type(err).__name__}",
                        hint="check the network and the server, then run the command again",
                    ) from None
            finally:
                self._release(generation, sftp, healthy)
        raise AssertionError("unreachable")

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/") or not name:
            raise ValueError(f"invalid object name {name!r}")
        return posixpath.join(self.root, name)

    def _not_found(self, name: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(f"{name} not found in {self.location}")

    @staticmethod
    def _makedirs(sftp: Any, path: str) -> None:
        missing: list[str] = []
        current = path
        while current not in ("", "/", "."):
            try:
                attrs = sftp.stat(current)
            except OSError as err:
                if not _is_missing(err):
                    raise
                missing.append(current)
                current = posixpath.dirname(current)
                continue
            if not stat_module.S_ISDIR(attrs.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, f"{current} is not a folder")
            break
        for folder in reversed(missing):
            try:
                sftp.mkdir(folder, 0o700)
            except OSError:
                # another thread may have made it in the meantime
                if not stat_module.S_ISDIR(sftp.stat(folder).st_mode or 0):
                    raise

    # -- the Backend interface -----------------------------------------------------------

    def put(self, name: str, data: ObjectData) -> None:
        path = self._path(name)
        folder = posixpath.dirname(path)
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else data
        size = sum(len(part) for part in parts)

        def operation(sftp: Any) -> None:
            tmp = _temp_name(path)
            try:
                try:
                    handle = self._create(sftp, tmp)
                except OSError as err:
                    if _is_missing(err):
                        self._makedirs(sftp, folder)
                    elif _is_refused(err):
                        raise
                    else:  # a leftover of an interrupted upload of the same name
                        tmp = f"{tmp}-{secrets.token_hex(4)}"
                    handle = self._create(sftp, tmp)
                with handle:
                    handle.set_pipelined(True)
                    # for a server that ignored the mode in the open request; a write-only
                    # account may not chmod (fsetstat denied), and needs not
                    with contextlib.suppress(PermissionError):
                        handle.chmod(FILE_MODE)
                    for part in parts:
                        if part:
                            handle.write(bytes(part) if not isinstance(part, bytes) else part)
                    handle.flush()
                    self._fsync(sftp, handle)
                self._publish(sftp, tmp, path, size)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise

        self._run(f"{name} in {self.location}", operation)

    @staticmethod
    def _create(sftp: Any, path: str) -> Any:
        """Open a new file for writing (create, exclusive), created with FILE_MODE by the server:
        paramiko's own open() sends no mode, and a write-only account may not chmod later."""
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = FILE_MODE
        flags = paramiko.sftp.SFTP_FLAG_WRITE | paramiko.sftp.SFTP_FLAG_CREATE
        flags |= paramiko.sftp.SFTP_FLAG_EXCL
        kind, message = sftp._request(paramiko.sftp.CMD_OPEN, sftp._adjust_cwd(path), flags, attrs)
        if kind != paramiko.sftp.CMD_HANDLE:
            raise paramiko.SFTPError("Expected handle")
        return paramiko.SFTPFile(sftp, message.get_binary(), "wb", -1)

    def _publish(self, sftp: Any, tmp: str, path: str, size: int) -> None:
        """Give the finished temp file its final name: posix-rename; where the server refuses
        it (a write-only account), hardlink@openssh.com, else a plain rename. Those two never
        replace an existing name. A write-only account keeps the temp name as a second name of
        the same file (it may not remove it; no extra space): delete() removes both."""
        if not self._write_only:
            try:
                sftp.posix_rename(tmp, path)
                return
            except OSError as err:
                if not (_is_refused(err) or _is_unsupported(err)):
                    raise
                self._write_only = _is_refused(err)
        for how in ("hardlink", "rename"):
            try:
                if how == "hardlink":
                    sftp._request(
                        paramiko.sftp.CMD_EXTENDED, "hardlink@openssh.com",
                        sftp._adjust_cwd(tmp), sftp._adjust_cwd(path),
                    )  # fmt: skip
                else:
                    sftp.rename(tmp, path)
                    return
            except OSError as err:
                if _is_refused(err) or _is_unsupported(err):
                    continue
                if not self._already_stored(sftp, path, size):
                    raise
            if not self._write_only:
                with contextlib.suppress(OSError):
                    sftp.remove(tmp)
            return
        raise BackendPermissionError(
            f"the SFTP server refused to give a stored file its name ({path}): it denies "
            "posix-rename, hardlink and rename",
            hint="allow posix-rename (a normal account), or hardlink or rename (a write-only one)",
        )

    @staticmethod
    def _already_stored(sftp: Any, path: str, size: int) -> bool:
        """Whether `path` exists with `size` bytes, after linking onto it failed. Names are the
        SHA-256 of the content, so that is a retried upload whose first try landed (its answer
        lost with the connection); a different size is refused loudly: nothing is replaced."""
        try:
            existing = int(sftp.stat(path).st_size or 0)
        except OSError:
            return False
        if existing == size:
            return True
        raise BackendError(
            f"{path} already exists with {existing} bytes (not {size}); it was not replaced",
            hint="run `safehold check`; remove the stray file with the maintenance account",
        )

    @staticmethod
    def _fsync(sftp: Any, handle: Any) -> None:
        """fsync@openssh.com when the server offers it (as restic does); else skip."""
        with contextlib.suppress(Exception):
            sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", handle.handle)

    def get(self, name: str) -> bytes:
        path = self._path(name)

        def operation(sftp: Any) -> bytes:
            try:
                with sftp.open(path, "rb") as handle:
                    size = int(handle.stat().st_size or 0)
                    if size > 0:
                        handle.prefetch(size)
                    return cast(bytes, handle.read())
            except OSError as err:
                if _is_missing(err):
                    raise self._not_found(name) from None
                raise

        return self._run(f"{name} in {self.location}", operation)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        path = self._path(name)

        def operation(sftp: Any) -> bytes:
            try:
                with sftp.open(path, "rb") as handle:
                    if length == 0:
                        return b""
                    handle.seek(offset)
                    return cast(bytes, handle.read(length))
            except OSError as err:
                if _is_missing(err):
                    raise self._not_found(name) from None
                raise

        return self._run(f"{name} in {self.location}", operation)

    def _listdir(self, rel_dir: str) -> builtins.list[Any]:
        folder = posixpath.join(self.root, rel_dir) if rel_dir else self.root

        def operation(sftp: Any) -> builtins.list[Any]:
            try:
                return cast(builtins.list[Any], sftp.listdir_attr(folder))
            except OSError as err:
                if _is_missing(err) or getattr(err, "errno", None) == errno.ENOTDIR:
                    return []
                raise

        return self._run(f"listing {rel_dir or '/'} in {self.location}", operation)

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base_dir, _, _ = prefix.rpartition("/")
        yield from self._walk(base_dir, prefix, self._listdir(base_dir))

    def _walk(self, rel_dir: str, prefix: str, listing: builtins.list[Any]) -> Iterator[FileInfo]:
        entries = []
        for entry in sorted(listing, key=lambda entry: str(entry.filename)):
            filename = str(entry.filename)
            if filename.startswith(_TMP_PREFIX) or filename in (".", ".."):
                continue
            name = f"{rel_dir}/{filename}" if rel_dir else filename
            if stat_module.S_ISDIR(entry.st_mode or 0):
                folder = name + "/"
                if folder.startswith(prefix) or prefix.startswith(folder):
                    entries.append((name, True, 0))
            elif name.startswith(prefix):
                entries.append((name, False, int(entry.st_size or 0)))
        folders = [name for name, is_dir, _ in entries if is_dir]
        # data/ has 256 sub-folders: list them over several channels at once
        if len(folders) > 1:
            with ThreadPoolExecutor(max_workers=self._max_sessions) as pool:
                listings = dict(zip(folders, pool.map(self._listdir, folders), strict=True))
        else:
            listings = {name: self._listdir(name) for name in folders}
        for name, is_dir, size in entries:
            if is_dir:
                yield from self._walk(name, prefix, listings.pop(name))
            else:
                yield FileInfo(name, size)

    def delete(self, name: str) -> None:
        path = self._path(name)

        def operation(sftp: Any) -> None:
            # the temp name a write-only account left as a second name of the file goes too;
            # sent ahead, unanswered: paramiko drops its status while it waits for the remove
            sftp._async_request(
                type(None), paramiko.sftp.CMD_REMOVE, sftp._adjust_cwd(_temp_name(path))
            )
            try:
                sftp.remove(path)
            except OSError as err:
                if _is_missing(err):
                    return
                if not _is_refused(err):
                    raise
                if name.startswith(LOCKS_PREFIX):
                    return  # a write-only account: the lock stays and goes stale
                raise DeleteRefusedError(
                    f"the SFTP server refused to delete {name} in {self.location}"
                ) from None

        self._run(f"{name} in {self.location}", operation)

    def stat(self, name: str) -> FileInfo:
        path = self._path(name)

        def operation(sftp: Any) -> FileInfo:
            try:
                return FileInfo(name, int(sftp.stat(path).st_size or 0))
            except OSError as err:
                if _is_missing(err):
                    raise self._not_found(name) from None
                raise

        return self._run(f"{name} in {self.location}", operation)

    def exists(self) -> bool:
        def operation(sftp: Any) -> bool:
            try:
                sftp.stat(self.root)
            except OSError as err:
                if _is_missing(err):
                    return False
                raise
            return True

        return self._run(self.location, operation)

    def create(self) -> None:
        checked = False  # the location was found missing or empty: a retry finishes the layout

        def operation(sftp: Any) -> None:
            nonlocal checked
            retry = checked
            try:
                entries = sftp.listdir(self.root)
            except OSError as err:
                if not _is_missing(err):
                    raise
                self._makedirs(sftp, self.root)
            else:
                if entries and not retry:
                    raise RepositoryExistsError(f"{self.location} exists and is not empty")
            checked = True
            folders = [posixpath.join(self.root, top) for top in _TOP_DIRS]
            folders += [posixpath.join(self.root, "data", f"{n:02x}") for n in range(256)]
            for folder in folders:
                try:
                    sftp.mkdir(folder, 0o700)
                except OSError:
                    # made by the first try (the connection dropped after it)
                    if not (retry and stat_module.S_ISDIR(sftp.stat(folder).st_mode or 0)):
                        raise

        self._run(self.location, operation)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every channel and the SSH connection (the backend is unusable afterwards)."""
        self._closed = True
        with self._lock:
            client, self._client = self._client, None
            idle, self._idle = self._idle, []
            self._generation += 1
        for _, sftp in idle:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> SftpBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
