"""Key files as restic and rustic accept them: the informational fields are optional, and an
unreadable key file is reported as unreadable, never as a wrong password (exit 12)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.backends.memory import MemoryBackend
from safehold.errors import ExitCode, UnreadableKeyFilesError, WrongPasswordError
from safehold.repo.key import KdfParams, KeyFile, UnreadableKeyError
from safehold.repo.repository import Repository

FAST = KdfParams(n=1024, r=8, p=1)
PASSWORD = b"correct horse battery staple"
RUSTIC = Path(__file__).parent / "fixtures" / "rustic"


def _strip_optional_fields(backend: MemoryBackend, key_id: str) -> None:
    name = f"keys/{key_id}"
    value = json.loads(backend.get(name))
    for field in ("created", "username", "hostname"):
        del value[field]
    backend.delete(name)
    backend.put(name, json.dumps(value).encode())


def test_key_without_optional_fields_opens() -> None:
    backend = MemoryBackend("test")
    repo = Repository.init(backend, PASSWORD, kdf=FAST)
    _strip_optional_fields(backend, repo.key_id)
    opened = Repository.open(backend, PASSWORD)
    assert opened.master == repo.master
    (info,) = opened.list_keys()
    assert (info.username, info.hostname, info.created, info.problem) == ("", "", None, None)
    raw = KeyFile.decode(backend.get(f"keys/{repo.key_id}")).encode()
    assert b"created" not in raw  # written back as read, without inventing a time


def test_rustic_written_keys_open(tmp_path: Path) -> None:
    """rustic's own fixture (config + two keys without the optional fields) opens."""
    backend = LocalBackend(tmp_path / "repo")
    backend.create()
    backend.put("config", (RUSTIC / "config").read_bytes())
    for name in ("key1", "key2"):
        raw = (RUSTIC / name).read_bytes()
        assert b"created" not in raw and b"hostname" not in raw
        backend.put(f"keys/{hashlib.sha256(raw).hexdigest()}", raw)
    one = Repository.open(backend, b"test")
    two = Repository.open(backend, b"test2")
    assert one.master == two.master
    assert one.key_id != two.key_id
    assert one.config.version in (1, 2)
    assert len(one.list_keys()) == 2
    with pytest.raises(WrongPasswordError) as caught:
        Repository.open(backend, b"wrong")
    assert caught.value.exit_code == ExitCode.WRONG_PASSWORD


@pytest.mark.parametrize(
    "raw",
    [
        b"this is not json",
        b"[1, 2]",
        b'{"kdf":"scrypt","N":1024,"r":8,"p":1,"salt":"AAAA"}',
        b'{"kdf":"scrypt","N":1024,"r":8,"p":1,"salt":"!!","data":"AAAA"}',
        b'{"kdf":"argon2","N":1,"r":1,"p":1,"salt":"","data":""}',
    ],
)
def test_malformed_key_file_is_unreadable(raw: bytes) -> None:
    with pytest.raises(UnreadableKeyError):
        KeyFile.decode(raw)


def test_only_key_corrupt_is_unreadable_not_wrong_password() -> None:
    backend = MemoryBackend("test")
    repo = Repository.init(backend, PASSWORD, kdf=FAST)
    name = f"keys/{repo.key_id}"
    raw = backend.get(name)
    backend.delete(name)
    backend.put(name, raw[: len(raw) // 2])  # truncated: no longer JSON
    with pytest.raises(UnreadableKeyFilesError) as caught:
        Repository.open(backend, PASSWORD)
    assert caught.value.exit_code != ExitCode.WRONG_PASSWORD
    assert name in caught.value.message
    (info,) = repo.list_keys()
    assert info.problem is not None and info.problem.startswith("unreadable")


def test_corrupt_key_beside_a_readable_one() -> None:
    """A damaged key file does not stop another key from opening; a password that fits no
    readable key is a wrong password (exit 12), and the message names the unreadable file."""
    backend = MemoryBackend("test")
    repo = Repository.init(backend, PASSWORD, kdf=FAST)
    backend.put("keys/" + "ab" * 32, b'{"kdf":"scrypt"')
    assert Repository.open(backend, PASSWORD).key_id == repo.key_id
    with pytest.raises(WrongPasswordError) as caught:
        Repository.open(backend, b"other")
    assert caught.value.exit_code == ExitCode.WRONG_PASSWORD
    assert "1 readable key" in caught.value.message
    assert "keys/" + "ab" * 32 in caught.value.message
