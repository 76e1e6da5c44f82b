"""Key files: `keys/<id>` holds the master key encrypted under a key derived with scrypt.

Several key files may wrap the same master key (one per person or machine); any of them opens
the repository. The file is plain JSON; only its `data` field is encrypted. `created`,
`username` and `hostname` are informational and optional (rustic writes keys without them), as
restic treats them; a file that is not JSON or lacks `kdf`/`N`/`r`/`p`/`salt`/`data` is
unreadable (`UnreadableKeyError`), which is never the same thing as a password that does not fit.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

from safehold.repo.crypto import AuthenticationError, MasterKey
from safehold.repo.format import encode_json, hash_id
from safehold.repo.gotypes import GoTime, format_time, parse_time
from safehold.repo.kdf import (
    DEFAULT_KDF,
    KdfParams,
    UnreadableKeyError,
    derive,
    kdf_fields,
    key_file_json,
)

__all__ = [
    "DEFAULT_KDF",
    "KdfParams",
    "KeyFile",
    "UnreadableKeyError",
    "derive_user_key",
    "wrap_master_key",
]


def derive_user_key(password: bytes, salt: bytes, params: KdfParams) -> MasterKey:
    return MasterKey.from_derived(derive(password, salt, params))


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
        value = key_file_json(raw)
        params, salt = kdf_fields(value)
        try:
            created = value.get("created")
            return cls(
                created=parse_time(created) if created else None,
                username=str(value.get("username") or ""),
                hostname=str(value.get("hostname") or ""),
                params=params,
                salt=salt,
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
