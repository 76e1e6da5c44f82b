"""The key derivation that starts before the CLI is imported (cli/early_key.py): it guesses
the repository and password from the command line and the environment as the opener would,
and the real open takes its result only for the same password, salt and parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.backends.local import LocalBackend
from safehold.cli import backup_commands, early_key
from safehold.errors import WrongPasswordError
from safehold.repo import kdf
from safehold.repo.key import KdfParams
from safehold.repo.repository import Repository

FAST = KdfParams(n=1024, r=8, p=1)
PASSWORD = "early bird"


@pytest.fixture(autouse=True)
def _no_leftover_derivations() -> Iterator[None]:
    kdf._early.clear()
    yield
    with kdf._early_lock:
        pending = list(kdf._early.values())
        kdf._early.clear()
    for derivation in pending:
        derivation.result()


@pytest.fixture
def repo_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no safehold.toml here
    path = tmp_path / "repo"
    Repository.init(LocalBackend(str(path)), PASSWORD.encode(), kdf=FAST)
    return path


def _env(**values: str) -> dict[str, str]:
    return {"SAFEHOLD_PASSWORD": PASSWORD, **values}


def test_a_typed_local_repository_is_derived_early_and_the_open_takes_it(
    repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert early_key.start(["-r", str(repo_path), "backup", "/srv"], _env()) == 1
    assert len(kdf._early) == 1
    derived: list[KdfParams] = []
    original = kdf._scrypt

    def counting(password: bytes, salt: bytes, params: KdfParams) -> bytes:
        derived.append(params)
        return original(password, salt, params)

    monkeypatch.setattr(kdf, "_scrypt", counting)
    opened = Repository.open(LocalBackend(str(repo_path)), PASSWORD.encode())
    assert derived == []  # the background result was used, nothing derived again
    assert kdf._early == {}  # taken once
    again = Repository.open(LocalBackend(str(repo_path)), PASSWORD.encode())
    assert len(derived) == 1 and again.master == opened.master


def test_global_options_after_the_command_and_the_environment_are_read(
    repo_path: Path, tmp_path: Path
) -> None:
    assert early_key.start(["restore", "latest", "--target", "x", "-r", str(repo_path)], _env())
    kdf._early.clear()
    assert early_key.start(["snapshots"], _env(SAFEHOLD_REPOSITORY=f"local:{repo_path}")) == 1
    kdf._early.clear()
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    assert early_key.start(["-r", str(repo_path), "--password-file", str(secret), "ls"], {}) == 1
    Repository.open(LocalBackend(str(repo_path)), PASSWORD.encode())
    assert kdf._early == {}  # the file's password, newline stripped, is the one used


def test_a_wrong_guess_changes_nothing(repo_path: Path) -> None:
    assert early_key.start(["-r", str(repo_path), "backup", "/srv"], _env(
        SAFEHOLD_PASSWORD="not it")) == 1  # fmt: skip
    with pytest.raises(WrongPasswordError):
        Repository.open(LocalBackend(str(repo_path)), b"also wrong")
    opened = Repository.open(LocalBackend(str(repo_path)), PASSWORD.encode())
    assert opened.key_id


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["-r", "{repo}", "init"], _env()),
        (["-r", "{repo}", "backup", "--help"], _env()),
        (["--plan", "p.toml", "-r", "{repo}", "backup"], _env()),
        (["-r", "{repo}", "backup"], _env(SAFEHOLD_PLAN="p.toml")),
        (["-r", "{repo}", "--password-command", "pass show x", "backup"], _env()),
        (["-r", "{repo}", "backup"], _env(SAFEHOLD_PASSWORD_COMMAND="pass show x")),
        (["-r", "s3:http://127.0.0.1:1/bucket", "backup"], _env()),
        (["-r", "sftp:user@host:/srv/repo", "backup"], _env()),
        (["-r", "{repo}", "--bogus", "backup"], _env()),
        (["-r", "{repo}", "backup"], {}),
        (["backup", "/srv"], _env()),
    ],
)
def test_no_guess_when_the_opener_might_decide_otherwise(
    repo_path: Path, argv: list[str], env: dict[str, str]
) -> None:
    argv = [word.replace("{repo}", str(repo_path)) for word in argv]
    assert early_key.start(argv, env) == 0
    assert kdf._early == {}


def test_no_guess_beside_a_plan_or_for_many_keys(repo_path: Path, tmp_path: Path) -> None:
    (tmp_path / "safehold.toml").write_text("")
    assert early_key.start(["-r", str(repo_path), "backup"], _env()) == 0
    (tmp_path / "safehold.toml").unlink()
    repo = Repository.open(LocalBackend(str(repo_path)), PASSWORD.encode())
    for number in range(4):
        repo.add_key(f"pw-{number}".encode(), kdf=FAST)
    assert early_key.start(["-r", str(repo_path), "backup"], _env()) == 0


def test_the_cli_starts_the_derivation_before_its_imports(repo_path: Path, tmp_path: Path) -> None:
    """In the real program the derivation runs while the CLI is imported."""
    probe = (
        "import os, sys, time\n"
        "from safehold.cli import early_key\n"
        "from safehold.repo import kdf\n"
        "early_key.start(sys.argv[1:], os.environ)\n"
        "import safehold.cli.main\n"
        "(pending,) = kdf._early.values()\n"
        "print(pending._thread.is_alive() or pending.result() is not None)\n"
    )
    src = str(Path(early_key.__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-c", probe, "-r", str(repo_path), "snapshots"],
        env={"PYTHONPATH": src, "SAFEHOLD_PASSWORD": PASSWORD}, cwd=tmp_path,
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


SLOW = KdfParams(n=2**16, r=8, p=1)  # ~0.2 s: still running when the asserts look


def test_early_pending_says_whether_the_wait_goes_on() -> None:
    assert not kdf.early_pending()  # nothing started
    kdf.derive_early(b"password", b"salt", SLOW)
    assert kdf.early_pending()
    kdf.derive(b"password", b"salt", SLOW)  # waits for it and takes it
    assert not kdf.early_pending()


def test_a_backup_stats_its_paths_while_the_key_is_derived(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "file.txt").write_text("x\n")
    assert backup_commands._stats_ahead([str(data)], []) is None  # no derivation: no wait
    kdf.derive_early(b"password", b"salt", SLOW)
    ahead = backup_commands._stats_ahead([str(data)], [])
    assert ahead is not None and ahead.complete
    assert os.fsencode(data / "sub" / "file.txt") in ahead.entries
