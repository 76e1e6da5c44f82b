"""Key files: `keys/<id>` holds the master key encrypted under a key derived with scrypt.

Several key files may wrap the same master key (one per person or machine); any of them opens
the repository. The file is plain JSON; only its `data` field is encrypted. `created`,
`username` and `hostname` are informational and optional (rustic writes keys without them), as
restic treats them; a file that is not JSON or lacks `kdf`/`N`/`r`/`p`/`salt`/`data` is
unreadable (`UnreadableKeyError`), which is never the same thing as a password that does not fit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass

from safehold.repo.crypto import AuthenticationError, MasterKey
from safehold.repo.format import encode_json, hash_id
from safehold.repo.gotypes import GoTime, format_time, parse_time


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost. N=2^15, r=8 is scrypt's interactive setting; p raises CPU cost linearly."""

    n: int = 32768
    r: int = 8
    p: int = 3


DEFAULT_KDF = KdfParams()
_SCRYPT_MAXMEM = 2**31 - 1  # hashlib refuses restic's parameters under its default limit


def _scrypt(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=params.n, r=params.r, p=params.p, dklen=64, maxmem=_SCRYPT_MAXMEM
    )


class _EarlyDerivation:
    """One scrypt derivation running on its own thread (hashlib.scrypt releases the GIL, so
    it takes the other core while the caller goes on: the CLI imports its modules meanwhile)."""

    def __init__(self, password: bytes, salt: bytes, params: KdfParams) -> None:
        self._done = threading.Event()
        self._derived: bytes | None = None
        self._thread = threading.Thread(
            target=self._run, args=(password, salt, params), name="early-scrypt", daemon=True
        )
        self._thread.start()

    def _run(self, password: bytes, salt: bytes, params: KdfParams) -> None:
        try:
            self._derived = _scrypt(password, salt, params)
        except (ValueError, MemoryError):
            self._derived = None  # the caller derives again and sees the error itself
        finally:
            self._done.set()

    def result(self) -> bytes | None:
        self._done.wait()
        return self._derived


_early: dict[tuple[bytes, bytes, KdfParams], _EarlyDerivation] = {}
_early_lock = threading.Lock()


def derive_early(password: bytes, key_file: KeyFile) -> None:
    """Start deriving `key_file`'s user key from `password` in the background. The next
    `derive_user_key` with the same password, salt and parameters takes the result (once)
    instead of deriving it again; any other call is not affected. A guess that turns out
    wrong (another password source wins) costs only the CPU of the background thread."""
    key = (password, key_file.salt, key_file.params)
    with _early_lock:
        if key not in _early:
            _early[key] = _EarlyDerivation(password, key_file.salt, key_file.params)


def derive_user_key(password: bytes, salt: bytes, params: KdfParams) -> MasterKey:
    with _early_lock:
        early = _early.pop((password, salt, params), None)
    derived = early.result() if early is not None else None
    if derived is None:
        derived = _scrypt(password, salt, params)
    return MasterKey.from_derived(derived)


class UnreadableKeyError(ValueError):
    """A key file that cannot be parsed (not JSON, a required field missing or malformed)."""


@dataclass(frozen=True)
class KeyFile:
    created: GoTime | None
    username: str
    hostname: str
    params: KdfParams
    salt: bytes
    data: bytes

    def encode(self) -> bytes:
        value: dict[str, object] = {}
        if self.created is not None:
            value["created"] = format_time(self.created)
        value.update(
            {
                "username": self.username,
                "hostname": self.hostname,
                "kdf": "scrypt",
                "N": self.params.n,
                "r": self.params.r,
                "p": self.params.p,
                "salt": base64.b64encode(self.salt).decode("ascii"),
                "data": base64.b64encode(self.data).decode("ascii"),
            }
        )
        return encode_json(value)

    @classmethod
    def decode(cls, raw: bytes) -> KeyFile:
        """Parse a key file; raises UnreadableKeyError saying what is wrong with it."""
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise UnreadableKeyError(f"not JSON ({err})") from None
        if not isinstance(value, dict):
            raise UnreadableKeyError("not a JSON object")
        if value.get("kdf") != "scrypt":
            raise UnreadableKeyError(f"unsupported key derivation {value.get('kdf')!r}")
        missing = [name for name in ("N", "r", "p", "salt", "data") if name not in value]
        if missing:
            raise UnreadableKeyError(f"missing field(s) {', '.join(missing)}")
        try:
            created = value.get("created")
            return cls(
                created=parse_time(created) if created else None,
                username=str(value.get("username") or ""),
                hostname=str(value.get("hostname") or ""),
                params=KdfParams(int(value["N"]), int(value["r"]), int(value["p"])),
                salt=base64.b64decode(value["salt"], validate=True),
                data=base64.b64decode(value["data"], validate=True),
            )
        except (ValueError, TypeError) as err:
            raise UnreadableKeyError(f"malformed field ({err})") from None

    def unwrap(self, password: bytes) -> MasterKey | None:
        """The master key, or None when the password does not open this key file."""
        try:
            user_key = derive_user_key(password, self.salt, self.params)
        except (ValueError, MemoryError) as err:  # scrypt refuses the parameters
            raise UnreadableKeyError(f"unusable scrypt parameters ({err})") from None
        try:
            plaintext = user_key.decrypt_object(self.data)
        except AuthenticationError:
            return None
        try:
            return MasterKey.from_json(json.loads(plaintext))
        except (ValueError, KeyError, TypeError) as err:
            raise UnreadableKeyError(f"its master key is malformed ({err})") from None


def wrap_master_key(
    master: MasterKey,
    password: bytes,
    *,
    created: GoTime | None,
    username: str,
    hostname: str,
    params: KdfParams = DEFAULT_KDF,
) -> tuple[str, bytes]:
    """Create a key file for `password`; returns (key id, file bytes)."""
    salt = os.urandom(64)
    user_key = derive_user_key(password, salt, params)
    data = user_key.encrypt_object(encode_json(master.to_json()))
    encoded = KeyFile(created, username, hostname, params, salt, data).encode()
    return hash_id(encoded), encoded
