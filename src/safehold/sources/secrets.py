"""The app's secrets: files (`.env`, `config/master.key`, `certs/*.key`) and environment
variables, encrypted with age to the plan's recipients BEFORE they enter the repository.

The repository password alone therefore never reveals a secret: what restic (or safehold
without an identity) reads back is age ciphertext. The backing-up host needs only the public
keys; the identity (the private key) is given at restore/drill time (`--identity FILE`,
`SAFEHOLD_AGE_IDENTITY_FILE`, or the plan's `identity_command`), and lives elsewhere.

Snapshot layout under `/<source>/`: `files/<relative path>.age` per file, `env.age` holding
the variables as a dotenv text, and `index.age`: a JSON of every item's plaintext SHA-256, so
a restore verifies what it decrypted. The manifest (readable with the repository password
alone) names every item, its plaintext size and the SHA-256 of its age CIPHERTEXT, never a
value and never a plaintext hash: a hash of a short secret could be guessed offline.
Snapshots made before `index.age` existed carry the plaintext hash as the item's `sha256`;
they are still restored and verified with it. Messages name files and variables, never
their contents.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import pyrage

from safehold.errors import IntegrityError, UsageError
from safehold.fs.archiver import BackupItem
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions, Manifest, RestoreReport, item_path
from safehold.sources.process import SourceError

IDENTITY_ENV = "SAFEHOLD_AGE_IDENTITY_FILE"
FILES_FOLDER = "files"
ENV_ITEM = "env.age"
ENV_FILE = "env"  # the restored variables, in the restore folder
INDEX_ITEM = "index.age"  # the plaintext SHA-256 of every item, encrypted like them
AGE_MAGIC = b"age-encryption.org/v1\n"
MAX_SECRET_BYTES = 16 * 1024 * 1024  # secrets are small; a bigger file is a plan mistake
_IDENTITY_TIMEOUT = 120.0
_CHUNK = 64 * 1024
_TAG = 16
_NONCE = 16
NO_IDENTITY_HINT = (
    f"give --identity FILE, set {IDENTITY_ENV}, or add identity_command to the secrets source "
    "(e.g. `pass show safehold/age`)"
)


@dataclass(frozen=True)
class SecretItem:
    """One stored secret as the manifest names it: a file at its relative path, the env, or
    the index. Only what is safe without the identity: sizes and ciphertext hashes."""

    name: str  # "config/master.key", "env" for the variables, "index" for the index
    kind: str  # file | env | index
    stored: str  # its path under the source's folder, like files/config/master.key.age
    size: int  # plaintext bytes
    age_sha256: str = ""  # of the age ciphertext as stored ("" in snapshots before it)
    variables: tuple[str, ...] = ()  # env: the variable names (never values)
    sha256: str = ""  # of the plaintext: ONLY in snapshots made before index.age

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "stored": self.stored,
            "size": self.size, "age_sha256": self.age_sha256,
        }  # fmt: skip
        if self.kind == "env":
            data["variables"] = list(self.variables)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecretItem:
        return cls(
            str(data["name"]), str(data["kind"]), str(data["stored"]), int(data["size"]),
            str(data.get("age_sha256") or ""),
            tuple(str(v) for v in data.get("variables") or ()), str(data.get("sha256") or ""),
        )  # fmt: skip


def manifest_items(manifest: Mapping[str, Any]) -> list[SecretItem]:
    """The items a secrets manifest lists; IntegrityError when it is not one."""
    try:
        return [SecretItem.from_json(entry) for entry in manifest["items"]]
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("the secrets manifest in the snapshot is damaged") from None


def manifest_index(manifest: Mapping[str, Any]) -> SecretItem | None:
    """The manifest's `index.age` item; None for a snapshot made before the index existed
    (its items carry their plaintext `sha256`)."""
    entry = manifest.get("index")
    if entry is None:
        return None
    try:
        return SecretItem.from_json(entry)
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("the secrets manifest in the snapshot is damaged") from None


class SecretsSource:
    kind = "secrets"

    def __init__(
        self,
        name: str,
        base_dir: Path,
        files: list[str],
        env: list[str],
        recipients: list[str],
        *,
        identity: Path | None = None,
        identity_command: str | None = None,
        environ: Mapping[str, str] = os.environ,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.name = name
        self.base_dir = Path(os.path.abspath(base_dir))
        self.files = list(files)
        self.env = list(env)
        self.recipients = list(recipients)
        self.identity = identity
        self.identity_command = identity_command
        self._environ = environ
        self._redact = redact
        self._items: list[SecretItem] = []
        self._index: SecretItem | None = None

    # ----- backup -------------------------------------------------------------------------

    def items(self) -> list[BackupItem]:
        """Reads and encrypts every secret now (they are small), so a missing file or unset
        variable fails the source before anything is stored. The plaintext hashes go into
        the encrypted index, never into the manifest."""
        recipients = [pyrage.x25519.Recipient.from_str(key) for key in self.recipients]
        plaintexts: list[tuple[SecretItem, bytes]] = []
        for relative, path in self._resolve_files():
            stored = f"{FILES_FOLDER}/{relative}.age"
            plaintexts.append((SecretItem(relative, "file", stored, 0), self._read(relative, path)))
        if self.env:
            text = encode_dotenv({name: self._variable(name) for name in self.env}).encode()
            plaintexts.append((SecretItem("env", "env", ENV_ITEM, 0, "", tuple(self.env)), text))
        hashes = {item.stored: _sha256(plaintext) for item, plaintext in plaintexts}
        index = json.dumps({"sha256": hashes}, sort_keys=True).encode()
        items: list[BackupItem] = []
        self._items = []
        for item, plaintext in plaintexts:
            backup_item, stored_item = self._encrypted(item, plaintext, recipients)
            items.append(backup_item)
            self._items.append(stored_item)
        backup_item, self._index = self._encrypted(
            SecretItem("index", "index", INDEX_ITEM, 0), index, recipients
        )
        items.append(backup_item)
        return items

    def _encrypted(
        self, item: SecretItem, plaintext: bytes, recipients: list[Any]
    ) -> tuple[BackupItem, SecretItem]:
        ciphertext: bytes = pyrage.encrypt(plaintext, recipients)
        stored = replace(item, size=len(plaintext), age_sha256=_sha256(ciphertext))
        path = item_path(self.name, *item.stored.split("/"))
        return BackupItem(path, stream=_opener(ciphertext)), stored

    def probe(self) -> list[str]:
        """What a backup would fail on, by name only: a pattern matching no file, a listed
        file that is missing or unreadable, an unset variable. Reads no secret's value."""
        problems = []
        for pattern in self.files:
            try:
                found = [path for _, path in self._resolve([pattern])]
            except SourceError:
                problems.append(f"{pattern} matches no file")
                continue
            for path in found:
                shown = path.relative_to(self.base_dir).as_posix()
                if not path.is_file():
                    what = "is not a file" if path.exists() else "does not exist"
                    problems.append(f"secret file {shown} {what}")
                elif not os.access(path, os.R_OK):
                    problems.append(f"secret file {shown} is not readable")
        problems += [f"environment variable {name} is not set" for name in self.env
                     if name not in self._environ]  # fmt: skip
        return problems

    def _resolve_files(self) -> list[tuple[str, Path]]:
        return self._resolve(self.files)

    def _resolve(self, patterns: list[str]) -> list[tuple[str, Path]]:
        found: dict[str, Path] = {}
        for pattern in patterns:
            if glob.has_magic(pattern):
                matches = [p for p in sorted(self.base_dir.glob(pattern)) if p.is_file()]
                if not matches:
                    raise SourceError(
                        f"source {self.name}: {pattern} matches no file in {self.base_dir}",
                        hint="fix the pattern in the plan, or remove it",
                    )
            else:
                matches = [self.base_dir / pattern]
            for path in matches:
                found.setdefault(path.relative_to(self.base_dir).as_posix(), path)
        return sorted(found.items())

    def _read(self, relative: str, path: Path) -> bytes:
        try:
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                raise SourceError(
                    f"source {self.name}: secret file {relative} {what} (in {self.base_dir})",
                    hint="restore it from the password manager, or fix `files` in the plan",
                )
            if path.stat().st_size > MAX_SECRET_BYTES:
                raise SourceError(
                    f"source {self.name}: {relative} is larger than "
                    f"{MAX_SECRET_BYTES // (1024 * 1024)} MiB: not a secret",
                    hint="back it up with a files source instead",
                )
            return path.read_bytes()
        except OSError as err:
            raise SourceError(
                f"source {self.name}: cannot read {relative}: {err.strerror}",
                hint="run safehold as a user that can read the app's secrets",
            ) from None

    def _variable(self, name: str) -> str:
        value = self._environ.get(name)
        if value is None:
            raise SourceError(
                f"source {self.name}: environment variable {name} is not set",
                hint="run the backup with the app's environment (e.g. from its service unit)",
            )
        return value

    def manifest(self) -> Manifest:
        return {
            "encryption": "age (X25519), before the repository's own encryption",
            "recipients": list(self.recipients),
            "identity_command": self._redact(self.identity_command or "") or None,
            "items": [item.to_json() for item in self._items],
            "index": self._index.to_json() if self._index else None,
        }

    def production_location(self) -> str:
        return str(self.base_dir)

    def is_production_target(self, target: str) -> bool:
        """The plan folder itself is where the live secrets are."""
        return Path(os.path.abspath(target)) == self.base_dir

    # ----- restore ------------------------------------------------------------------------

    def has_identity(self) -> bool:
        """Whether an identity was given (it may still fail to load or to decrypt)."""
        return bool(self.identity or self._environ.get(IDENTITY_ENV) or self.identity_command)

    def restore(
        self,
        repo: Repository,
        snapshot: Snapshot,
        manifest: Manifest,
        target: str,
        *,
        overwrite: bool = False,
        accounts: AccountOptions = KEEP_ACCOUNTS,  # no accounts here: ignored
    ) -> RestoreReport:
        """Decrypt every item into the folder `target` (new, or empty), files at their
        relative paths and the variables as `target/env`, all mode 0600, each verified
        against its plaintext SHA-256 (from the encrypted index, or an old manifest's
        `sha256`) before anything is written. Raises UsageError without a usable identity,
        IntegrityError on a hash mismatch."""
        started = time.monotonic()
        identities = load_identities(self._identity_text(), self.name)
        folder = Path(os.path.abspath(target))
        if not overwrite:
            _check_new_folder(folder)
        items = manifest_items(manifest)
        hashes = self._plaintext_hashes(repo, snapshot, manifest, items, identities)
        plaintexts = []
        for item in items:
            ciphertext = self._stored(repo, snapshot, item)
            plaintexts.append((item, self._decrypt(item, ciphertext, identities, hashes)))
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for item, plaintext in plaintexts:
            relative = ENV_FILE if item.kind == "env" else item.name
            _write_private(folder / relative, plaintext, replace=overwrite)
        report = RestoreReport(self.name, str(folder), time.monotonic() - started)
        files = [item for item, _ in plaintexts if item.kind == "file"]
        variables = [v for item, _ in plaintexts for v in item.variables]
        report.summary.append(
            f"{len(files)} files and {len(variables)} environment variables decrypted into "
            f"{folder}; every SHA-256 matches the backup"
        )
        if variables:
            report.summary.append(f"variables in {folder / ENV_FILE}: {', '.join(variables)}")
        report.details = {
            "verified": True, "decrypted": True, "files": [item.name for item in files],
            "variables": variables,
        }  # fmt: skip
        return report

    def _plaintext_hashes(
        self, repo: Repository, snapshot: Snapshot, manifest: Manifest,
        items: list[SecretItem], identities: list[Any],
    ) -> dict[str, str]:  # fmt: skip
        """Stored path -> plaintext SHA-256: decrypted from index.age, or (a snapshot made
        before the index) the items' own `sha256`."""
        index = manifest_index(manifest)
        if index is None:
            return {item.stored: item.sha256 for item in items if item.sha256}
        text = self._decrypt(index, self._stored(repo, snapshot, index), identities, None)
        try:
            hashes = json.loads(text)["sha256"]
            return {str(stored): str(digest) for stored, digest in hashes.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(
                f"source {self.name}: the encrypted index of snapshot {snapshot.short_id} is "
                "damaged"
            ) from None

    def check_stored(
        self, repo: Repository, snapshot: Snapshot, manifest: Manifest
    ) -> RestoreReport:
        """Without an identity: every manifest item (and the index) is in the snapshot, has
        the ciphertext SHA-256 the manifest records, is an age file with a stanza for an
        X25519 recipient (what `age1…` keys are) and has the length its plaintext size
        implies. Decrypts nothing; raises IntegrityError on a problem."""
        started = time.monotonic()
        items = manifest_items(manifest)
        index = manifest_index(manifest)
        for item in [*items, *([index] if index else [])]:
            _check_age_form(item, self._stored(repo, snapshot, item))
        report = RestoreReport(self.name, "", time.monotonic() - started)
        report.summary.append(
            f"{len(items)} encrypted items present and addressed to "
            f"{len(manifest.get('recipients') or [])} recipient(s); not decrypted (no identity)"
        )
        report.details = {"verified": True, "decrypted": False}
        return report

    def _stored(self, repo: Repository, snapshot: Snapshot, item: SecretItem) -> bytes:
        """The item's ciphertext, checked against the manifest's `age_sha256` (if any)."""
        out = io.BytesIO()
        try:
            dump_file(repo, snapshot, f"/{self.name}/{item.stored}", out)
        except UsageError:
            raise IntegrityError(
                f"source {self.name}: {item.name} is in the manifest but not in snapshot "
                f"{snapshot.short_id}"
            ) from None
        data = out.getvalue()
        if item.age_sha256 and _sha256(data) != item.age_sha256:
            raise IntegrityError(
                f"source {self.name}: the stored ciphertext of {item.name} differs from the "
                "backup's manifest (its SHA-256)"
            )
        return data

    def _decrypt(
        self, item: SecretItem, ciphertext: bytes, identities: list[Any],
        hashes: Mapping[str, str] | None,
    ) -> bytes:  # fmt: skip
        """Decrypt one item; with `hashes`, its plaintext must have the hash recorded for its
        stored path (a missing hash is a damaged backup, never a silent pass)."""
        try:
            plaintext: bytes = pyrage.decrypt(ciphertext, identities)
        except pyrage.DecryptError:
            raise UsageError(
                f"source {self.name}: {item.name} cannot be decrypted with the given identity",
                hint="use the identity of one of the recipients: "
                + ", ".join(key[:16] + "…" for key in self.recipients),
            ) from None
        wrong_hash = hashes is not None and hashes.get(item.stored) != _sha256(plaintext)
        if wrong_hash or len(plaintext) != item.size:
            raise IntegrityError(
                f"source {self.name}: {item.name} decrypted, but its SHA-256 differs from the "
                "backup's"
            )
        return plaintext

    def _identity_text(self) -> str:
        path = self.identity or self._environ.get(IDENTITY_ENV)
        if path:
            try:
                return Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                reason = getattr(err, "strerror", None) or "not a text file"
                raise UsageError(
                    f"cannot read the age identity file {path}: {reason}",
                    hint=NO_IDENTITY_HINT,
                ) from None
        if self.identity_command:
            return run_identity_command(self.identity_command, self.base_dir, self._environ)
        raise UsageError(
            f"source {self.name}: no age identity to decrypt the secrets", hint=NO_IDENTITY_HINT
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _opener(data: bytes) -> Callable[[], Any]:
    @contextmanager
    def open_stream() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    return open_stream


def run_identity_command(command: str, cwd: Path, environ: Mapping[str, str]) -> str:
    """The identity printed by `command` (run by /bin/sh in `cwd`). Its output is never part
    of a message: a failure says only the command and its exit status."""
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command], cwd=cwd, env=dict(environ), capture_output=True,
            timeout=_IDENTITY_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UsageError(
            f"the identity command `{command}` could not run: {type(err).__name__}",
            hint="run it yourself to see why, or give --identity FILE",
        ) from None
    if done.returncode != 0:
        raise UsageError(
            f"the identity command `{command}` failed (exit status {done.returncode})",
            hint="run it yourself to see why (is the password manager unlocked?), "
            "or give --identity FILE",
        )
    return done.stdout.decode("utf-8", "replace")


def load_identities(text: str, source: str = "secrets") -> list[Any]:
    """The age X25519 identities in an identity file's text (comments and blank lines
    skipped). The text is never part of a message."""
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise UsageError(
                f"source {source}: the age identity holds a line that is not an "
                "AGE-SECRET-KEY-1… key",
                hint="give the file age-keygen wrote (or what the identity command prints)",
            ) from None
    if not identities:
        raise UsageError(
            f"source {source}: the age identity holds no AGE-SECRET-KEY-1… key",
            hint=NO_IDENTITY_HINT,
        )
    return identities


def _check_new_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(
            f"{folder} already exists and is not an empty folder",
            hint="restore secrets into a new folder",
        )


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` to `path` with mode 0600 (folders 0700); never over an existing file
    unless `replace`, and then by renaming a finished temporary file over it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.safehold-tmp") if replace else path
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    handle = os.open(temporary, flags, 0o600)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, 0o600)
    if replace:
        os.replace(temporary, path)


def _check_age_form(item: SecretItem, data: bytes) -> None:
    """An age v1 file with an X25519 stanza whose payload length matches the plaintext size."""
    problem = age_form_problem(data, item.size)
    if problem:
        raise IntegrityError(f"stored secret {item.name}: {problem}")


def age_form_problem(data: bytes, size: int) -> str:
    """What is wrong with `data` as the age encryption of `size` bytes to an X25519 key, or ''."""
    if not data.startswith(AGE_MAGIC):
        return "not an age file (the header is missing)"
    end = data.find(b"\n--- ")
    if end < 0:
        return "the age header does not end"
    stanzas = [line for line in data[:end].split(b"\n") if line.startswith(b"-> ")]
    if not any(line.split(b" ")[1:2] == [b"X25519"] for line in stanzas):
        return "not addressed to an age1… (X25519) recipient"
    payload = len(data) - (data.find(b"\n", end + 1) + 1)
    chunks = max(1, -(-size // _CHUNK))
    if payload != _NONCE + size + chunks * _TAG:
        return f"{payload} bytes of payload, not what {size} bytes encrypt to (truncated?)"
    return ""


_BARE = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "$": "\\$"}
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def encode_dotenv(variables: Mapping[str, str]) -> str:
    """`NAME=value` lines; values that are not plain are double-quoted with \\ escapes."""
    lines = []
    for name, value in variables.items():
        if not _BARE.fullmatch(value):
            value = '"' + "".join(_ESCAPES.get(char, char) for char in value) + '"'
        lines.append(f"{name}={value}\n")
    return "".join(lines)


def parse_dotenv(text: str) -> dict[str, str]:
    """The inverse of `encode_dotenv` (also reads plain `NAME=value` files and comments)."""
    variables: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m[1], "\\" + m[1]), value[1:-1])
        variables[name.strip().removeprefix("export ").strip()] = value
    return variables
