"""An independent re-implementation of restic's object encryption, for cross-checking safehold.

Nothing here imports safehold: Poly1305 is written out in pure Python from the specification
(cr.yp.to/mac/poly1305-20050329.pdf), and AES comes straight from `cryptography`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

P1305 = (1 << 130) - 5
R_CLAMP = 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF


def aes128_ecb_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def poly1305(r: bytes, s: bytes, message: bytes) -> bytes:
    """Poly1305 with explicit r (clamped here) and s, Horner's rule mod 2^130-5."""
    r_value = int.from_bytes(r, "little") & R_CLAMP
    accumulator = 0
    for start in range(0, len(message), 16):
        chunk = message[start : start + 16]
        # each chunk gets a 1 bit just above its last byte (2^128 for full chunks)
        accumulator = accumulator + int.from_bytes(chunk, "little") + (1 << (8 * len(chunk)))
        accumulator = accumulator * r_value % P1305
    tag = (accumulator + int.from_bytes(s, "little")) % (1 << 128)
    return tag.to_bytes(16, "little")


def poly1305_aes(mac_k: bytes, mac_r: bytes, nonce: bytes, message: bytes) -> bytes:
    """restic's MAC: Poly1305 keyed with r and s = AES-128_k(nonce)."""
    return poly1305(mac_r, aes128_ecb_block(mac_k, nonce), message)


def aes256_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()


def restic_encrypt(
    encrypt_key: bytes, mac_k: bytes, mac_r: bytes, iv: bytes, plaintext: bytes
) -> bytes:
    """IV || AES-256-CTR(plaintext) || Poly1305-AES(ciphertext), as restic writes objects."""
    ciphertext = aes256_ctr(encrypt_key, iv, plaintext)
    return iv + ciphertext + poly1305_aes(mac_k, mac_r, iv, ciphertext)
