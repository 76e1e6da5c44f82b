"""Key files: `keys/<id>` holds the master key encrypted under a key derived with scrypt.

Several key files may wrap the same master key (one per person or machine); any of them opens
the repository. The file is plain JSON; only its `data` field is encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
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


def derive_user_key(password: bytes, salt: bytes, params: KdfParams) -> MasterKey:
    derived = hashlib.scrypt(
        password, salt=salt, n=params.n, r=params.r, p=params.p, dklen=64, maxmem=_SCRYPT_MAXMEM
    )
    return MasterKey.from_derived(derived)


@dataclass(frozen=True)
class KeyFile:
    created: GoTime
    username: str
    hostname: str
    params: KdfParams
    salt: bytes
    data: bytes

    def encode(self) -> bytes:
        return encode_json(
            {
                "created": format_time(self.created),
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

    @classmethod
    def decode(cls, raw: bytes) -> KeyFile:
        value = json.loads(raw)
        if value.get("kdf") != "scrypt":
            raise ValueError(f"unsupported key derivation {value.get('kdf')!r}")
        return cls(
            created=parse_time(value["created"]),
            username=str(value.get("username", "")),
            hostname=str(value.get("hostname", "")),
            params=KdfParams(int(value["N"]), int(value["r"]), int(value["p"])),
            salt=base64.b64decode(value["salt"]),
            data=base64.b64decode(value["data"]),
        )

    def unwrap(self, password: bytes) -> MasterKey | None:
        """The master key, or None when the password does not open this key file."""
        user_key = derive_user_key(password, self.salt, self.params)
        try:
            plaintext = user_key.decrypt_object(self.data)
        except AuthenticationError:
            return None
        return MasterKey.from_json(json.loads(plaintext))


def wrap_master_key(
    master: MasterKey,
    password: bytes,
    *,
    created: GoTime,
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
