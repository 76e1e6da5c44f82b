"""restic's AES-256-CTR + Poly1305-AES object encryption and the scrypt key split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from restic_reference import aes128_ecb_block, aes256_ctr, poly1305, poly1305_aes, restic_encrypt

from safehold.repo.crypto import EXTENSION, AuthenticationError, MasterKey
from safehold.repo.key import KdfParams, derive_user_key

h = bytes.fromhex

keys = st.builds(
    MasterKey,
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
)


@settings(deadline=None)
@given(keys, st.binary(max_size=4096))
def test_round_trip(key: MasterKey, plaintext: bytes) -> None:
    sealed = key.encrypt_object(plaintext)
    assert len(sealed) == len(plaintext) + EXTENSION
    assert key.decrypt_object(sealed) == plaintext
    assert key.decrypt_object(memoryview(sealed)) == plaintext


def test_fresh_iv_per_object() -> None:
    key = MasterKey.generate()
    first, second = key.encrypt_object(b"same"), key.encrypt_object(b"same")
    assert first[:16] != second[:16]
    assert first != second


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=300), st.data())
def test_any_flipped_bit_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    # A random key, not a drawn one: Poly1305 is only a MAC for random r (r = 0 or r = 2
    # are weak keys a shrinker finds at once, and MasterKey.generate never makes).
    key = MasterKey.generate()
    sealed = bytearray(key.encrypt_object(plaintext))
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="byte")
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    sealed[position] ^= 1 << bit
    with pytest.raises(AuthenticationError):
        key.decrypt_object(bytes(sealed))


@pytest.mark.parametrize("where", ["iv", "ciphertext", "mac"])
def test_flipped_byte_in_each_part(where: str) -> None:
    key = MasterKey.generate()
    sealed = bytearray(key.encrypt_object(b"some secret content"))
    position = {"iv": 3, "ciphertext": 16 + 5, "mac": len(sealed) - 1}[where]
    sealed[position] ^= 0x80
    with pytest.raises(AuthenticationError):
        key.decrypt_object(bytes(sealed))


@pytest.mark.parametrize("size", [0, 1, 31])
def test_too_short_is_rejected(size: int) -> None:
    with pytest.raises(AuthenticationError):
        MasterKey.generate().decrypt_object(b"\x00" * size)


def test_wrong_key_fails() -> None:
    key = MasterKey.generate()
    sealed = key.encrypt_object(b"payload")
    with pytest.raises(AuthenticationError):
        MasterKey.generate().decrypt_object(sealed)
    with pytest.raises(AuthenticationError):  # only the MAC's AES key differs
        MasterKey(key.encrypt, bytes(16), key.mac_r).decrypt_object(sealed)
    with pytest.raises(AuthenticationError):  # only r differs (in bits that survive clamping)
        MasterKey(key.encrypt, key.mac_k, bytes(16)).decrypt_object(sealed)


def test_empty_plaintext_is_authenticated() -> None:
    key = MasterKey.generate()
    sealed = key.encrypt_object(b"")
    assert key.decrypt_object(sealed) == b""
    with pytest.raises(AuthenticationError):
        key.decrypt_object(sealed[:16] + bytes(16))


# ----- cross-checks against an independent implementation ------------------------------------


def test_reference_poly1305_matches_the_poly1305_aes_paper() -> None:
    """Validate the test's own Poly1305-AES on vectors from cr.yp.to/mac/poly1305-20050329.pdf."""
    k, n = h("ec074c835580741701425b623235add6"), h("fb447350c4e868c52ac3275cf9d4327e")
    r = h("851fc40c3467ac0be05cc20404f3f700")
    assert aes128_ecb_block(k, n) == h("580b3b0f9447bb1e69d095b5928b6dbc")
    assert poly1305_aes(k, r, n, h("f3f6")) == h("f4c633c3044fc145f84f335cb81953de")
    # empty message: the tag is just AES_k(n)
    k2, n2 = h("75deaa25c09f208e1dc4ce6b5cad3fbf"), h("61ee09218d29b0aaed7e154a2c5509cc")
    r2 = h("a0f3080000f46400d0c7e9076c834403")
    assert poly1305_aes(k2, r2, n2, b"") == h("dd3fab2251f11ac759f0887129cc2ee7")


def test_paper_vector_authenticates_in_safehold() -> None:
    """An object `n || m || tag` built from the paper's vector passes safehold's MAC check."""
    k, n = h("ec074c835580741701425b623235add6"), h("fb447350c4e868c52ac3275cf9d4327e")
    r = h("851fc40c3467ac0be05cc20404f3f700")
    key = MasterKey(bytes(32), k, r)
    sealed = n + h("f3f6") + h("f4c633c3044fc145f84f335cb81953de")
    assert key.decrypt_object(sealed) == aes256_ctr(bytes(32), n, h("f3f6"))
    with pytest.raises(AuthenticationError):
        key.decrypt_object(n + h("f3f6") + h("f4c633c3044fc145f84f335cb81953df"))


@settings(deadline=None)
@given(keys, st.binary(max_size=1000))
def test_mac_matches_independent_poly1305_aes(key: MasterKey, plaintext: bytes) -> None:
    sealed = key.encrypt_object(plaintext)
    iv, ciphertext, tag = sealed[:16], sealed[16:-16], sealed[-16:]
    s = aes128_ecb_block(key.mac_k, iv)
    assert tag == poly1305(key.mac_r, s, ciphertext)
    assert aes256_ctr(key.encrypt, iv, ciphertext) == plaintext


@settings(deadline=None)
@given(keys, st.binary(min_size=16, max_size=16), st.binary(max_size=1000))
def test_decrypts_objects_sealed_independently(key: MasterKey, iv: bytes, plaintext: bytes) -> None:
    sealed = restic_encrypt(key.encrypt, key.mac_k, key.mac_r, iv, plaintext)
    assert key.decrypt_object(sealed) == plaintext


def test_poly1305_reference_handles_partial_and_full_blocks() -> None:
    # A message of exactly 16 bytes and one of 17 differ in the padding bit placement.
    r, s = bytes(range(16)), bytes(16)
    assert poly1305(r, s, b"\x00" * 16) != poly1305(r, s, b"\x00" * 15)
    assert poly1305(r, s, b"") == s


# ----- key derivation ---------------------------------------------------------------------


def test_scrypt_known_answers_and_master_key_split() -> None:
    """RFC 7914 section 12 vectors; restic splits the 64 bytes: AES key, MAC k, MAC r."""
    derived = h(
        "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
        "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"
    )
    key = derive_user_key(b"", b"", KdfParams(n=16, r=1, p=1))
    assert key.encrypt == derived[0:32]
    assert key.mac_k == derived[32:48]
    assert key.mac_r == derived[48:64]

    derived = h(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
    )
    key = derive_user_key(b"password", b"NaCl", KdfParams(n=1024, r=8, p=16))
    assert (key.encrypt, key.mac_k, key.mac_r) == (derived[:32], derived[32:48], derived[48:])


def test_from_derived_requires_64_bytes() -> None:
    with pytest.raises(ValueError):
        MasterKey.from_derived(bytes(63))


def test_master_key_json_round_trip_and_validation() -> None:
    key = MasterKey.generate()
    value = key.to_json()
    assert set(value) == {"mac", "encrypt"}
    assert set(value["mac"]) == {"k", "r"}  # type: ignore[arg-type]
    assert MasterKey.from_json(value) == key
    short = {"mac": {"k": value["mac"]["k"], "r": "AAAA"}, "encrypt": value["encrypt"]}  # type: ignore[index]
    with pytest.raises(ValueError):
        MasterKey.from_json(short)
    with pytest.raises(ValueError):
        MasterKey.from_json({"mac": "nope", "encrypt": value["encrypt"]})


@settings(deadline=None)
@given(keys, st.lists(st.binary(max_size=700), max_size=6))
def test_streamed_objects_are_ordinary_objects(key: MasterKey, pieces: list[bytes]) -> None:
    """Encrypting piece by piece gives an object decrypt_object reads, and the streamed
    decryptor reads any object; a flipped byte fails its verify."""
    encryptor = key.stream_encryptor()
    sealed = encryptor.iv + b"".join(encryptor.update(piece) for piece in pieces)
    sealed += encryptor.finalize()
    plaintext = b"".join(pieces)
    assert key.decrypt_object(sealed) == plaintext
    decryptor = key.stream_decryptor(sealed[:16])
    body = sealed[16:-16]
    assert decryptor.update(body[:5]) + decryptor.update(body[5:]) == plaintext
    decryptor.verify(sealed[-16:])
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    decryptor = key.stream_decryptor(sealed[:16])
    decryptor.update(body)
    with pytest.raises(AuthenticationError):
        decryptor.verify(bytes(tampered[-16:]))
    with pytest.raises(AuthenticationError):
        MasterKey.generate().stream_decryptor(sealed[:16]).verify(sealed[-16:])


def _go_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CTR as Go's crypto/cipher counts: the whole 16-byte block is one big-endian
    counter (written from single-block AES, independent of OpenSSL's CTR mode)."""
    counter = int.from_bytes(iv, "big")
    stream = bytearray()
    while len(stream) < len(data):
        stream += aes128_ecb_block(key, counter.to_bytes(16, "big"))  # AES-256: 32-byte key
        counter = (counter + 1) % (1 << 128)
    return bytes(a ^ b for a, b in zip(data, stream[: len(data)], strict=True))


def _sealed_pieces(out: bytes, sizes: list[int]) -> list[bytes]:
    pieces, position = [], 0
    for size in sizes:
        pieces.append(out[position : position + size + EXTENSION])
        position += size + EXTENSION
    return pieces


_NEAR_WRAP = [
    bytes(16),
    b"\xff" * 16,
    (2**128 - 3).to_bytes(16, "big"),
    (2**64 - 1).to_bytes(16, "big"),
]


@settings(deadline=None, max_examples=60)
@given(
    keys,
    st.lists(st.binary(max_size=200), max_size=8),
    st.one_of(st.none(), st.sampled_from(_NEAR_WRAP), st.binary(min_size=16, max_size=16)),
)
def test_objects_encrypted_in_one_stream_are_ordinary_objects(
    key: MasterKey, plaintexts: list[bytes], start_iv: bytes | None
) -> None:
    """encrypt_many_into: each object decrypts alone, is what restic's decryption expects
    (IV || Go-counted AES-CTR || Poly1305-AES), and no two objects share a counter block,
    also where the 128-bit counter wraps and where its low 64 bits carry."""
    out = bytearray(sum(len(p) + EXTENSION for p in plaintexts) + 1)
    written = key.encrypt_many_into(plaintexts, memoryview(out), start_iv)
    assert written == len(out) - 1
    assert out[-1] == 0  # nothing past the end
    blocks: set[int] = set()
    for plaintext, sealed in zip(
        plaintexts, _sealed_pieces(bytes(out), [len(p) for p in plaintexts]), strict=True
    ):
        assert key.decrypt_object(sealed) == plaintext
        iv, ciphertext, tag = sealed[:16], sealed[16:-16], sealed[-16:]
        assert _go_ctr(key.encrypt, iv, ciphertext) == plaintext
        assert tag == poly1305_aes(key.mac_k, key.mac_r, iv, ciphertext)
        first = int.from_bytes(iv, "big")
        used = {(first + n) % (1 << 128) for n in range((len(plaintext) + 15) // 16)}
        assert not used & blocks
        blocks |= used
    if start_iv is not None and plaintexts:
        assert out[:16] == start_iv


def test_objects_in_one_stream_get_distinct_random_ivs() -> None:
    key = MasterKey.generate()
    out = bytearray(2 * (3 * (5 + EXTENSION)))
    key.encrypt_many_into([b"hello"] * 3, memoryview(out)[: 3 * (5 + EXTENSION)])
    key.encrypt_many_into([b"hello"] * 3, memoryview(out)[3 * (5 + EXTENSION) :])
    ivs = {bytes(piece[:16]) for piece in _sealed_pieces(bytes(out), [5] * 6)}
    assert len(ivs) == 6
    assert key.encrypt_many_into([], memoryview(out)) == 0


def test_objects_that_do_not_fit_are_refused_before_anything_is_written() -> None:
    out = bytearray(2 * (10 + EXTENSION) - 1)
    with pytest.raises(ValueError):
        MasterKey.generate().encrypt_many_into([b"0123456789"] * 2, memoryview(out))
    assert out == bytearray(len(out))
