"""The small JSON files: config, keys/, snapshots/, locks/."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from restic_reference import restic_encrypt

from safehold.repo.config import RepositoryConfig, is_irreducible, random_irreducible_polynomial
from safehold.repo.crypto import MasterKey
from safehold.repo.format import hash_id
from safehold.repo.gotypes import GoTime, parse_time
from safehold.repo.key import KdfParams, KeyFile, wrap_master_key
from safehold.repo.lock import STALE_AFTER_NS, Lock
from safehold.repo.snapshot import Snapshot

FAST_KDF = KdfParams(n=1024, r=8, p=1)
RESTIC_POLYNOMIAL = 0x31CA8504DFCF83
RESTIC_TEST_POLYNOMIAL = 0x3DA3358B4DC173  # restic's chunker tests use this one

# ----- GF(2) polynomials, computed independently (Ben-Or, as restic's chunker does) ---------


def _gf2_mod(a: int, m: int) -> int:
    degree = m.bit_length() - 1
    while a.bit_length() - 1 >= degree:
        a ^= m << (a.bit_length() - 1 - degree)
    return a


def _gf2_mul(a: int, b: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        b >>= 1
    return result


def _gf2_gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _gf2_mod(a, b)
    return a


def _ben_or_irreducible(p: int) -> bool:
    degree = p.bit_length() - 1
    power = 0b10
    for _ in range(degree // 2):
        power = _gf2_mod(_gf2_mul(power, power), p)  # x^(2^i) mod p
        if _gf2_gcd(p, power ^ 0b10) != 1:
            return False
    return True


def test_restic_polynomials_are_irreducible() -> None:
    assert is_irreducible(RESTIC_POLYNOMIAL)
    assert is_irreducible(RESTIC_TEST_POLYNOMIAL)
    assert _ben_or_irreducible(RESTIC_POLYNOMIAL)


def test_reducible_polynomials_are_rejected() -> None:
    assert not is_irreducible(0x31CA8504DFCF85)
    assert not _ben_or_irreducible(0x31CA8504DFCF85)
    assert not is_irreducible(RESTIC_POLYNOMIAL ^ 1)  # divisible by x
    assert not is_irreducible(RESTIC_POLYNOMIAL >> 1)  # degree 52
    assert not is_irreducible(_gf2_mul(RESTIC_POLYNOMIAL, 0b11))  # degree 54


@settings(deadline=None)
@given(st.integers(0, 2**49 - 1), st.sampled_from([0b111, 0b1011, 0b10011]))
def test_products_without_roots_are_rejected(low_bits: int, small_factor: int) -> None:
    """(irreducible of degree 2, 3 or 4) * Q: no root in GF(2), yet reducible."""
    degree = 53 - (small_factor.bit_length() - 1)
    q = (1 << degree) | (low_bits & ((1 << degree) - 1)) | 1
    if bin(q).count("1") % 2 == 0:
        q ^= 0b10  # make Q(1) = 1 so the product has no root at all
    product = _gf2_mul(small_factor, q)
    assert product.bit_length() - 1 == 53
    assert product & 1 and bin(product).count("1") % 2 == 1
    assert not is_irreducible(product)


@settings(deadline=None, max_examples=150)
@given(st.integers(0, 2**52 - 1))
def test_agrees_with_ben_or(low_bits: int) -> None:
    candidate = (1 << 53) | (low_bits << 1) | 1
    assert is_irreducible(candidate) == _ben_or_irreducible(candidate)


def test_random_irreducible_polynomial() -> None:
    seen = set()
    for _ in range(3):
        polynomial = random_irreducible_polynomial()
        assert polynomial.bit_length() == 54  # degree 53
        assert _ben_or_irreducible(polynomial)
        seen.add(polynomial)
    assert len(seen) == 3


def test_config_json_matches_restic() -> None:
    config = RepositoryConfig(2, "ab" * 32, RESTIC_TEST_POLYNOMIAL)
    assert config.encode() == (
        b'{"version":2,"id":"' + b"ab" * 32 + b'","chunker_polynomial":"3da3358b4dc173"}'
    )
    assert RepositoryConfig.decode(config.encode()) == config
    restic = b'{"version":1,"id":"' + b"cd" * 32 + b'","chunker_polynomial":"31ca8504dfcf83"}'
    assert RepositoryConfig.decode(restic) == RepositoryConfig(1, "cd" * 32, RESTIC_POLYNOMIAL)


def test_new_config() -> None:
    first, second = RepositoryConfig.new(), RepositoryConfig.new()
    assert first.version == 2
    assert len(first.id) == 64 and first.id != second.id
    assert _ben_or_irreducible(first.chunker_polynomial)
    assert first.chunker_seed != 0 and first.chunker_seed != second.chunker_seed


# ----- key files ----------------------------------------------------------------------------

CREATED = parse_time("2026-11-22T18:30:15.383129482+01:00")


def test_key_wrap_unwrap() -> None:
    master = MasterKey.generate()
    key_id, raw = wrap_master_key(
        master, b"secret", created=CREATED, username="ann", hostname="box", params=FAST_KDF
    )
    assert key_id == hashlib.sha256(raw).hexdigest()
    key_file = KeyFile.decode(raw)
    assert key_file.unwrap(b"secret") == master
    assert key_file.unwrap(b"Secret") is None
    assert key_file.unwrap(b"") is None
    assert (key_file.username, key_file.hostname, key_file.created) == ("ann", "box", CREATED)
    assert key_file.params == FAST_KDF
    assert len(key_file.salt) == 64


def test_key_json_uses_restic_field_names() -> None:
    _, raw = wrap_master_key(
        MasterKey.generate(), b"pw", created=CREATED, username="u", hostname="h", params=FAST_KDF
    )
    value = json.loads(raw)
    assert list(value) == [
        "created", "username", "hostname", "kdf", "N", "r", "p", "salt", "data",
    ]  # fmt: skip
    assert value["created"] == "2026-11-22T18:30:15.383129482+01:00"
    assert value["kdf"] == "scrypt"
    assert (value["N"], value["r"], value["p"]) == (1024, 8, 1)
    # data is the master key JSON, sealed under the scrypt-derived key (checked with hashlib)
    derived = hashlib.scrypt(b"pw", salt=base64.b64decode(value["salt"]), n=1024, r=8, p=1,
                             dklen=64)  # fmt: skip
    user_key = MasterKey(derived[:32], derived[32:48], derived[48:])
    inner = json.loads(user_key.decrypt_object(base64.b64decode(value["data"])))
    assert set(inner) == {"mac", "encrypt"}
    assert set(inner["mac"]) == {"k", "r"}


def test_unwraps_a_key_file_sealed_independently() -> None:
    """A key file built with hashlib + the reference cipher (no safehold code) opens."""
    salt = bytes(range(64))
    derived = hashlib.scrypt(b"correct horse", salt=salt, n=1024, r=8, p=1, dklen=64)
    master = MasterKey.generate()
    master_json = json.dumps(
        {
            "mac": {"k": base64.b64encode(master.mac_k).decode(),
                    "r": base64.b64encode(master.mac_r).decode()},
            "encrypt": base64.b64encode(master.encrypt).decode(),
        }
    ).encode()  # fmt: skip
    data = restic_encrypt(derived[:32], derived[32:48], derived[48:], os.urandom(16), master_json)
    raw = json.dumps(
        {
            "created": "2026-11-22T18:30:15.383129482Z", "username": "root", "hostname": "h",
            "kdf": "scrypt", "N": 1024, "r": 8, "p": 1,
            "salt": base64.b64encode(salt).decode(), "data": base64.b64encode(data).decode(),
        }
    ).encode()  # fmt: skip
    assert KeyFile.decode(raw).unwrap(b"correct horse") == master
    assert KeyFile.decode(raw).unwrap(b"wrong horse") is None


def test_key_file_with_another_kdf_is_rejected() -> None:
    with pytest.raises(ValueError):
        KeyFile.decode(b'{"kdf":"argon2","N":1,"r":1,"p":1,"salt":"","data":""}')


# ----- snapshots ----------------------------------------------------------------------------

RESTIC_SNAPSHOT = (
    b'{"time":"2026-11-22T18:30:15.383129482+01:00",'
    b'"parent":"' + b"1" * 64 + b'","tree":"' + b"2" * 64 + b'",'
    b'"paths":["/srv/app","/etc"],"hostname":"web-1","username":"root","uid":1000,"gid":1000,'
    b'"excludes":["*.tmp"],"tags":["daily","app"],"original":"' + b"3" * 64 + b'",'
    b'"program_version":"restic 0.17.3",'
    b'"summary":{"backup_start":"2026-11-22T18:30:15Z","files_new":3,"total_bytes_processed":9}}'
)


def test_restic_snapshot_round_trips_byte_for_byte() -> None:
    snapshot = Snapshot.decode(RESTIC_SNAPSHOT, "ab" * 32)
    assert snapshot.time == parse_time("2026-11-22T18:30:15.383129482+01:00")
    assert snapshot.parent == "1" * 64 and snapshot.tree == "2" * 64
    assert snapshot.paths == ["/srv/app", "/etc"]
    assert (snapshot.uid, snapshot.gid) == (1000, 1000)
    assert snapshot.tags == ["daily", "app"] and snapshot.excludes == ["*.tmp"]
    assert snapshot.original == "3" * 64
    assert snapshot.extra["program_version"] == "restic 0.17.3"
    assert snapshot.extra["summary"]["files_new"] == 3
    assert snapshot.id == "ab" * 32 and snapshot.short_id == "abababab"
    assert snapshot.safehold == {} and snapshot.name is None and snapshot.complete
    assert snapshot.encode() == RESTIC_SNAPSHOT


def test_safehold_field_round_trips() -> None:
    snapshot = Snapshot(
        time=GoTime(1_700_000_000_123_456_789, 3600),
        tree="4" * 64,
        paths=["/data"],
        hostname="h",
        safehold={"name": "before-upgrade", "reason": "manual", "complete": False},
        extra={"program_version": "x"},
    )
    value = json.loads(snapshot.encode())
    assert value["safehold"] == {"name": "before-upgrade", "reason": "manual", "complete": False}
    assert "parent" not in value and "uid" not in value and "tags" not in value
    again = Snapshot.decode(snapshot.encode())
    assert again == snapshot
    assert (again.name, again.reason, again.complete) == ("before-upgrade", "manual", False)


snapshots = st.builds(
    Snapshot,
    time=st.builds(GoTime, st.integers(0, 2**62), st.integers(-840, 840).map(lambda m: m * 60)),
    tree=st.binary(min_size=32, max_size=32).map(bytes.hex),
    paths=st.lists(st.text(min_size=1, max_size=10), max_size=3),
    hostname=st.text(max_size=8),
    username=st.text(max_size=8),
    uid=st.integers(0, 2**32 - 1),
    gid=st.integers(0, 2**32 - 1),
    parent=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex),
    tags=st.lists(st.text(min_size=1, max_size=5), max_size=3),
    safehold=st.dictionaries(st.sampled_from(["name", "reason", "complete", "future"]),
                             st.text(min_size=1, max_size=5) | st.booleans(), max_size=3),
    extra=st.dictionaries(st.sampled_from(["program_version", "summary", "zzz"]),
                          st.text(max_size=5) | st.integers(), max_size=2),
)  # fmt: skip


@settings(deadline=None)
@given(snapshots)
def test_snapshot_round_trip(snapshot: Snapshot) -> None:
    assert Snapshot.decode(snapshot.encode()) == snapshot


# ----- locks --------------------------------------------------------------------------------

NOW = parse_time("2026-11-22T18:30:00Z").ns
MINUTE = 60 * 1_000_000_000


def _lock(age_ns: int, hostname: str = "here", pid: int | None = None, **kw: bool) -> Lock:
    return Lock(GoTime(NOW - age_ns), kw.get("exclusive", False), hostname, "u",
                os.getpid() if pid is None else pid)  # fmt: skip


@pytest.fixture(scope="module")
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_staleness(dead_pid: int) -> None:
    assert STALE_AFTER_NS == 30 * MINUTE
    # older than 30 minutes: stale, whoever holds it
    assert _lock(31 * MINUTE, hostname="elsewhere").is_stale(NOW, "here")
    assert _lock(31 * MINUTE).is_stale(NOW, "here")
    # young, from another host: cannot check the process, so not stale
    assert not _lock(1 * MINUTE, hostname="elsewhere", pid=dead_pid).is_stale(NOW, "here")
    assert not _lock(30 * MINUTE, hostname="elsewhere").is_stale(NOW, "here")
    # young, this host: stale exactly when the process is gone
    assert _lock(1 * MINUTE, pid=dead_pid).is_stale(NOW, "here")
    assert not _lock(1 * MINUTE).is_stale(NOW, "here")
    assert _lock(1 * MINUTE, pid=0).is_stale(NOW, "here")


def test_lock_conflicts() -> None:
    shared, exclusive = _lock(0), _lock(0, exclusive=True)
    assert not shared.conflicts_with(exclusive=False)
    assert shared.conflicts_with(exclusive=True)
    assert exclusive.conflicts_with(exclusive=False)
    assert exclusive.conflicts_with(exclusive=True)


def test_lock_json_matches_restic() -> None:
    lock = Lock(parse_time("2026-11-22T18:30:15.1+01:00"), True, "box", "ann", 4242, 1000, 100)
    assert lock.encode() == (
        b'{"time":"2026-11-22T18:30:15.1+01:00","exclusive":true,"hostname":"box",'
        b'"username":"ann","pid":4242,"uid":1000,"gid":100}'
    )
    assert Lock.decode(lock.encode()) == lock
    assert "exclusive lock by PID 4242 on box" in lock.describe()
    restic = b'{"time":"2026-11-22T18:30:15Z","exclusive":false,"hostname":"h","pid":7}'
    assert Lock.decode(restic) == Lock(parse_time("2026-11-22T18:30:15Z"), False, "h", "", 7)


def test_hash_id_is_sha256() -> None:
    assert hash_id(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
