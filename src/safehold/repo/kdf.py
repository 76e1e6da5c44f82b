"""scrypt, the key derivation of key files, and the fields of a key file it reads.

Light on purpose (the standard library only): cli/early_key.py starts the derivation of a
command's key files on a thread before anything else of the CLI is imported, so what runs
before the thread starts is only this. The key file itself, and unwrapping the master key with
the derived key, are repo/key.py's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from typing import Any, NamedTuple


class KdfParams(NamedTuple):
    """scrypt cost. N=2^15, r=8 is scrypt's interactive setting; p raises CPU cost linearly."""

    n: int = 32768
    r: int = 8
    p: int = 3


DEFAULT_KDF = KdfParams()
_SCRYPT_MAXMEM = 2**31 - 1  # hashlib refuses restic's parameters under its default limit


class UnreadableKeyError(ValueError):
    """A key file that cannot be parsed (not JSON, a required field missing or malformed)."""


def _scrypt(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=params.n, r=params.r, p=params.p, dklen=64, maxmem=_SCRYPT_MAXMEM
    )


def key_file_json(raw: bytes) -> dict[str, Any]:
    """A key file's JSON object, with its kdf scrypt and every required field present; raises
    UnreadableKeyError saying what is wrong with it."""
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
    return value


def kdf_fields(value: dict[str, Any]) -> tuple[KdfParams, bytes]:
    """The scrypt parameters and salt of a key file's JSON (`key_file_json`)."""
    try:
        params = KdfParams(int(value["N"]), int(value["r"]), int(value["p"]))
        return params, base64.b64decode(value["salt"], validate=True)
    except (ValueError, TypeError, binascii.Error) as err:
        raise UnreadableKeyError(f"malformed field ({err})") from None


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

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> bytes | None:
        self._done.wait()
        return self._derived


_early: dict[tuple[bytes, bytes, KdfParams], _EarlyDerivation] = {}
_early_lock = threading.Lock()


def derive_early(password: bytes, salt: bytes, params: KdfParams) -> None:
    """Start deriving a key file's user key from `password` in the background. The next
    `derive` with the same password, salt and parameters takes the result (once) instead of
    deriving it again; any other call is not affected. A guess that turns out wrong (another
    password source wins) costs only the CPU of the background thread."""
    key = (password, salt, params)
    with _early_lock:
        if key not in _early:
            _early[key] = _EarlyDerivation(password, salt, params)


def early_pending() -> bool:
    """Whether derivations started by `derive_early` are running and none has finished: the
    caller may use the wait (a backup stats its folders meanwhile, fs/statahead.py)."""
    with _early_lock:
        return bool(_early) and not any(early.done() for early in _early.values())


def derive(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    """scrypt's 64 bytes for a key file: the early derivation's, when one was started for
    exactly these, else derived now. Raises ValueError or MemoryError for unusable params."""
    with _early_lock:
        early = _early.pop((password, salt, params), None)
    derived = early.result() if early is not None else None
    if derived is None:
        derived = _scrypt(password, salt, params)
    return derived
