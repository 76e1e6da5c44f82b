"""restic's authenticated encryption: AES-256-CTR then Poly1305-AES over the ciphertext.

An encrypted object is `IV(16) || ciphertext || MAC(16)`. The MAC key is the pair (k, r):
the Poly1305 one-time key is `clamp(r) || AES-128_k(IV)`, so no two objects share one.
All primitives come from `cryptography` (OpenSSL) and release the GIL on large inputs.
"""

from __future__ import annotations

import base64
import hmac
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

IV_SIZE = 16
MAC_SIZE = 16
EXTENSION = IV_SIZE + MAC_SIZE
_COUNTER_MASK = (1 << 128) - 1
_ZEROS = bytes(16)


class AuthenticationError(Exception):
    """The ciphertext or its MAC was altered, or the key is wrong."""


def _clamp(r: bytes) -> bytes:
    clamped = bytearray(r)
    for index in (3, 7, 11, 15):
        clamped[index] &= 15
    for index in (4, 8, 12):
        clamped[index] &= 252
    return bytes(clamped)


@dataclass(frozen=True)
class MasterKey:
    """The repository's master key: 32 bytes for AES-256, 16+16 bytes for Poly1305-AES."""

    encrypt: bytes
    mac_k: bytes
    mac_r: bytes
    # Per-object setup measured ~35 us (two Cipher objects and their key checks), as much as
    # the crypto of a small blob: the key objects and the clamped r are made once, and each
    # thread keeps one AES-ECB encryptor for the MAC's one-time keys (ECB has no state
    # between blocks, so it is reused; encryptor objects must not be shared across threads).
    _aes: algorithms.AES = field(init=False, repr=False, compare=False)
    _mac_aes: algorithms.AES = field(init=False, repr=False, compare=False)
    _r: bytes = field(init=False, repr=False, compare=False)
    _local: threading.local = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.encrypt) != 32 or len(self.mac_k) != 16 or len(self.mac_r) != 16:
            raise ValueError("invalid master key sizes")
        object.__setattr__(self, "_aes", algorithms.AES(self.encrypt))
        object.__setattr__(self, "_mac_aes", algorithms.AES(self.mac_k))
        object.__setattr__(self, "_r", _clamp(self.mac_r))
        object.__setattr__(self, "_local", threading.local())

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(16), os.urandom(16))

    @classmethod
    def from_derived(cls, derived: bytes) -> MasterKey:
        """Split 64 bytes of scrypt output: AES key, then MAC k, then MAC r."""
        if len(derived) != 64:
            raise ValueError("derived key must be 64 bytes")
        return cls(derived[:32], derived[32:48], derived[48:64])

    def to_json(self) -> dict[str, object]:
        return {
            "mac": {"k": _b64(self.mac_k), "r": _b64(self.mac_r)},
            "encrypt": _b64(self.encrypt),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MasterKey:
        mac = data["mac"]
        if not isinstance(mac, dict):
            raise ValueError("invalid master key: mac is not an object")
        key = cls(_unb64(data["encrypt"]), _unb64(mac["k"]), _unb64(mac["r"]))
        if len(key.encrypt) != 32 or len(key.mac_k) != 16 or len(key.mac_r) != 16:
            raise ValueError("invalid master key sizes")
        return key

    def _mac_key(self, iv: bytes) -> bytes:
        """The Poly1305 one-time key of the object with this IV."""
        return self._r + self._mac_keys(iv)

    def _mac(self, iv: bytes, ciphertext: bytes | memoryview) -> bytes:
        return Poly1305.generate_tag(self._mac_key(iv), ciphertext)

    def stream_encryptor(self) -> StreamEncryptor:
        """Encrypt one object piece by piece (for objects too large to hold twice in memory):
        write `iv`, then every `update`, then `finalize()` (the MAC). The bytes are exactly
        what encrypt_object returns for the whole plaintext."""
        iv = os.urandom(IV_SIZE)
        return StreamEncryptor(
            iv, Cipher(self._aes, modes.CTR(iv)).encryptor(), Poly1305(self._mac_key(iv))
        )

    def stream_decryptor(self, iv: bytes) -> StreamDecryptor:
        """Decrypt one object piece by piece, the ciphertext after `iv` fed to `update`; the
        plaintext is NOT authentic until `verify(mac)` returned (it raises otherwise)."""
        if len(iv) != IV_SIZE:
            raise AuthenticationError("ciphertext too short")
        return StreamDecryptor(
            Cipher(self._aes, modes.CTR(iv)).decryptor(), Poly1305(self._mac_key(iv))
        )

    def encrypt_object(self, plaintext: bytes | memoryview) -> bytes:
        """Encrypt and authenticate: returns IV || ciphertext || MAC."""
        iv = os.urandom(IV_SIZE)
        encryptor = Cipher(self._aes, modes.CTR(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return iv + ciphertext + self._mac(iv, ciphertext)

    def encrypt_many_into(
        self,
        plaintexts: Sequence[bytes | memoryview],
        out: memoryview,
        start_iv: bytes | None = None,
    ) -> int:
        """Encrypt and authenticate several objects into `out`, back to back, each exactly as
        `encrypt_object` lays one out (IV || ciphertext || MAC); returns the bytes written.

        One AES-CTR stream serves them all: the first object's IV is random (`start_iv` in
        tests), each next one's is the previous IV plus the previous object's block count,
        and every object is padded to a block boundary in the stream (the padding's key
        stream is discarded). So no counter block is used twice, each object decrypts alone
        from the IV in its header (OpenSSL and Go both count the whole 128-bit block,
        big-endian), and the per-object setup (a Cipher, ~35 us, as much as the crypto of
        a small blob) is paid once per batch. The MAC's one-time keys are one ECB call."""
        if not plaintexts:
            return 0
        if sum(len(plaintext) for plaintext in plaintexts) + EXTENSION * len(plaintexts) > len(out):
            raise ValueError("the objects do not fit into the output buffer")
        counter = int.from_bytes(start_iv or os.urandom(IV_SIZE), "big")
        ivs = []
        for plaintext in plaintexts:
            ivs.append(counter.to_bytes(IV_SIZE, "big"))
            counter = (counter + (len(plaintext) + 15) // 16) & _COUNTER_MASK
        encryptor = Cipher(self._aes, modes.CTR(ivs[0])).encryptor()
        mac_keys = self._mac_keys(b"".join(ivs))
        r = self._r
        position = 0
        for number, plaintext in enumerate(plaintexts):
            size = len(plaintext)
            body = position + IV_SIZE
            end = body + size
            out[position:body] = ivs[number]
            if size:
                # update_into wants room for a block more than it writes: the MAC's place
                encryptor.update_into(plaintext, out[body : end + MAC_SIZE])
                if size % 16:
                    encryptor.update(_ZEROS[: 16 - size % 16])
            key = r + mac_keys[16 * number : 16 * number + 16]
            out[end : end + MAC_SIZE] = Poly1305.generate_tag(key, out[body:end])
            position = end + MAC_SIZE
        return position

    def _mac_keys(self, ivs: bytes) -> bytes:
        """AES-128_k of each IV (the Poly1305 one-time keys' second halves), in one call."""
        ecb = getattr(self._local, "ecb", None)
        if ecb is None:
            ecb = Cipher(self._mac_aes, modes.ECB()).encryptor()
            self._local.ecb = ecb
        keys: bytes = ecb.update(ivs)
        return keys

    def decrypt_object(self, data: bytes | memoryview) -> bytes:
        """Verify the MAC, then decrypt; raises AuthenticationError on any tampering."""
        if len(data) < EXTENSION:
            raise AuthenticationError("ciphertext too short")
        view = memoryview(data)
        iv = bytes(view[:IV_SIZE])
        ciphertext = view[IV_SIZE:-MAC_SIZE]
        expected = self._mac(iv, ciphertext)
        if not hmac.compare_digest(expected, bytes(view[-MAC_SIZE:])):
            raise AuthenticationError("MAC mismatch")
        decryptor = Cipher(self._aes, modes.CTR(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


class StreamEncryptor:
    """See MasterKey.stream_encryptor."""

    def __init__(self, iv: bytes, cipher: CipherContext, mac: Poly1305) -> None:
        self.iv = iv
        self._cipher = cipher
        self._mac = mac

    def update(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        ciphertext = self._cipher.update(plaintext)
        self._mac.update(ciphertext)
        return ciphertext

    def finalize(self) -> bytes:
        """The remaining ciphertext (none: CTR is a stream) is already out; returns the MAC."""
        self._cipher.finalize()
        return self._mac.finalize()


class StreamDecryptor:
    """See MasterKey.stream_decryptor."""

    def __init__(self, cipher: CipherContext, mac: Poly1305) -> None:
        self._cipher = cipher
        self._mac = mac

    def update(self, ciphertext: bytes | memoryview) -> bytes:
        self._mac.update(ciphertext)
        return self._cipher.update(ciphertext)

    def verify(self, mac: bytes) -> None:
        """Raises AuthenticationError unless `mac` is the MAC of all the ciphertext fed."""
        try:
            self._mac.verify(mac)
        except InvalidSignature:
            raise AuthenticationError("MAC mismatch") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    return base64.b64decode(value, validate=True)
