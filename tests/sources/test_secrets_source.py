"""The secrets source end to end through the real CLI: what enters the repository is age
ciphertext, the repository password alone reads none of it, the identity restores every file
and variable verified, and no secret value ever shows up in output, manifest or snapshot."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from safehold.plan.errors import PlanError
from safehold.plan.loader import parse_plan
from safehold.sources.secrets import age_form_problem, encode_dotenv, parse_dotenv
from tests.conftest import TEST_PASSWORD, RunCli

MASTER_KEY = b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
CERT_A = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANcertAsecret\n-----END PRIVATE KEY-----\n"
CERT_B = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANcertBsecret\n-----END PRIVATE KEY-----\n"
DOTENV = b"SECRET_KEY_BASE=dotenv-file-secret-value-123\n"
VARIABLES = {
    "STRIPE_SECRET_KEY": "sk_live_51HxyzStripeSecretValue",
    "DB_PASSWORD": 'p@ss "quoted" $dollar \\back\nnewline',
}
SECRET_VALUES = [
    MASTER_KEY.strip().decode(),
    "certAsecret",
    "certBsecret",
    "dotenv-file-secret-value-123",
    "sk_live_51HxyzStripeSecretValue",
    "quoted",
]


def make_identity(folder: Path) -> tuple[Path, str]:
    """An age key pair: the identity file (outside the app folder) and its public key."""
    identity = pyrage.x25519.Identity.generate()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "age-key.txt"
    path.write_text(f"# created by the test\n{identity}\n")
    path.chmod(0o600)
    return path, str(identity.to_public())


def make_app(root: Path, recipient: str, *, extra: str = "", files: str = "") -> Path:
    app = root / "shop"
    (app / "config").mkdir(parents=True)
    (app / "certs").mkdir()
    (app / "uploads").mkdir()
    (app / "uploads" / "a.txt").write_text("an upload")
    (app / ".env").write_bytes(DOTENV)
    (app / "config" / "master.key").write_bytes(MASTER_KEY)
    (app / "certs" / "a.key").write_bytes(CERT_A)
    (app / "certs" / "b.key").write_bytes(CERT_B)
    files = files or '[".env", "config/master.key", "certs/*.key"]'
    (app / "safehold.toml").write_text(f"""
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "1h"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[sources]]
name = "secrets"
type = "secrets"
files = {files}
env = ["STRIPE_SECRET_KEY", "DB_PASSWORD"]
recipients = ["{recipient}"]
{extra}
[[destinations]]
name = "local"
repository = "{root / "backups"}"
""")
    return app


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str]:
    return make_identity(tmp_path / "password-manager")


@pytest.fixture
def app(tmp_path: Path, keys: tuple[Path, str]) -> Path:
    return make_app(tmp_path, keys[1])


def _cli(run_cli: RunCli, app: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--plan", str(app / "safehold.toml"), *args, env={**VARIABLES, **env})


def _no_secret_in(text: str) -> None:
    for value in SECRET_VALUES:
        assert value not in text


def _backed_up(run_cli: RunCli, app: Path) -> subprocess.CompletedProcess[str]:
    assert _cli(run_cli, app, "init").returncode == 0
    backup = _cli(run_cli, app, "backup")
    assert backup.returncode == 0, backup.stderr
    return backup


def test_round_trip_the_password_alone_reads_ciphertext_the_identity_restores(
    app: Path, tmp_path: Path, keys: tuple[Path, str], run_cli: RunCli, restic_bin: str
) -> None:
    outputs = [_backed_up(run_cli, app)]

    # the repository password alone: no restore, and the stored items are age ciphertext
    refused = _cli(run_cli, app, "restore", "latest", "--source", "secrets", "--into",
                   str(tmp_path / "nokey"))  # fmt: skip
    assert refused.returncode != 0
    assert "no age identity" in refused.stderr and "--identity FILE" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 2  # error + hint, no traceback
    assert not (tmp_path / "nokey").exists()
    dumped = _dump(app, "/secrets/files/config/master.key.age")
    assert dumped.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert MASTER_KEY.strip() not in dumped
    stored = _restic(restic_bin, tmp_path, "dump", "latest", "/secrets/env.age")
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert b"sk_live" not in stored and b"STRIPE_SECRET_KEY" not in stored
    raw = _snapshot_json(app)
    _no_secret_in(raw)  # the snapshot JSON, manifest included, as restic reads it
    manifest = json.loads(raw)["safehold"]["sources"]["secrets"]
    names = [item["name"] for item in manifest["items"]]
    assert names == [".env", "certs/a.key", "certs/b.key", "config/master.key", "env"]
    assert manifest["items"][-1]["variables"] == ["STRIPE_SECRET_KEY", "DB_PASSWORD"]
    # only sizes and ciphertext hashes: no plaintext hash to guess a short secret against
    assert all("sha256" not in item for item in [*manifest["items"], manifest["index"]])
    for plaintext in (MASTER_KEY, CERT_A, CERT_B, DOTENV, encode_dotenv(VARIABLES).encode()):
        assert hashlib.sha256(plaintext).hexdigest() not in raw
    assert manifest["items"][3]["size"] == len(MASTER_KEY)
    assert manifest["items"][3]["age_sha256"] == hashlib.sha256(dumped).hexdigest()
    assert manifest["index"]["stored"] == "index.age"
    assert _dump(app, "/secrets/index.age").startswith(b"age-encryption.org/v1\n")

    # the identity decrypts everything, verified, mode 0600
    into = tmp_path / "restored"
    restored = _cli(run_cli, app, "restore", "latest", "--source", "secrets", "--into",
                    str(into), "--identity", str(keys[0]))  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert "every SHA-256 matches" in restored.stdout
    outputs.append(restored)
    for relative, data in {".env": DOTENV, "config/master.key": MASTER_KEY,
                           "certs/a.key": CERT_A, "certs/b.key": CERT_B}.items():  # fmt: skip
        assert (into / relative).read_bytes() == data
        assert stat.S_IMODE((into / relative).stat().st_mode) == 0o600
    assert stat.S_IMODE((into / "env").stat().st_mode) == 0o600
    assert parse_dotenv((into / "env").read_text()) == VARIABLES

    # SAFEHOLD_AGE_IDENTITY_FILE does the same
    by_env = _cli(run_cli, app, "restore", "latest", "--source", "secrets", "--into",
                  str(tmp_path / "by-env"), SAFEHOLD_AGE_IDENTITY_FILE=str(keys[0]))  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    assert (tmp_path / "by-env" / "config" / "master.key").read_bytes() == MASTER_KEY
    for proc in [*outputs, refused, by_env]:
        _no_secret_in(proc.stdout + proc.stderr)


def _restic(restic_bin: str, root: Path, *args: str) -> bytes:
    env = {**os.environ, "RESTIC_PASSWORD": TEST_PASSWORD, "RESTIC_CACHE_DIR": str(root / "rc")}
    return subprocess.run(
        [restic_bin, "-r", str(root / "backups"), "--no-lock", *args],
        capture_output=True, check=True, env=env,
    ).stdout  # fmt: skip


def _snapshot_json(app: Path) -> str:
    """The newest snapshot's JSON as stored (safehold's manifests included)."""
    import safehold

    plan = safehold.load_plan(app / "safehold.toml", environ=_cli_env())
    repo = safehold.open_repository(plan, environ=_cli_env())
    return safehold.snapshots(repo, plan)[-1].encode().decode()


def _dump(app: Path, path: str) -> bytes:
    """`safehold dump` of one stored item: bytes, with the repository password only."""
    return subprocess.run(
        [sys.executable, "-m", "safehold", "--plan", str(app / "safehold.toml"), "dump",
         "latest", path],
        capture_output=True, check=True, env=_cli_env(),
    ).stdout  # fmt: skip


def test_identity_command_wrong_identity_and_the_production_guard(
    tmp_path: Path, keys: tuple[Path, str], run_cli: RunCli
) -> None:
    app = make_app(tmp_path, keys[1], extra=f'identity_command = "cat {keys[0]}"')
    _backed_up(run_cli, app)
    into = tmp_path / "restored"
    restored = _cli(run_cli, app, "restore", "latest", "--source", "secrets", "--into", str(into))
    assert restored.returncode == 0, restored.stderr
    assert (into / "certs" / "b.key").read_bytes() == CERT_B

    other, _ = make_identity(tmp_path / "other")
    wrong = _cli(run_cli, app, "restore", "latest", "--source", "secrets", "--into",
                 str(tmp_path / "wrong"), "--identity", str(other))  # fmt: skip
    assert wrong.returncode != 0
    assert "cannot be decrypted with the given identity" in wrong.stderr
    assert not (tmp_path / "wrong").exists()

    onto_production = _cli(run_cli, app, "restore", "latest", "--source", "secrets", "--into",
                           str(app), "--identity", str(keys[0]))  # fmt: skip
    assert onto_production.returncode != 0
    assert "refusing to restore source secrets into its production location" in (
        onto_production.stderr
    )
    _no_secret_in(restored.stdout + restored.stderr + wrong.stderr + onto_production.stderr)


def test_a_missing_secret_file_fails_only_that_source(
    tmp_path: Path, keys: tuple[Path, str], run_cli: RunCli
) -> None:
    app = make_app(tmp_path, keys[1], files='["config/master.key", "config/missing.key"]')
    assert _cli(run_cli, app, "init").returncode == 0
    backup = _cli(run_cli, app, "backup")
    assert backup.returncode != 0
    assert "secret file config/missing.key does not exist" in backup.stdout + backup.stderr
    _no_secret_in(backup.stdout + backup.stderr)
    raw = _snapshot_json(app)
    sources = json.loads(raw)["safehold"]["sources"]
    assert "failed" in sources["secrets"] and "failed" not in sources["uploads"]
    unset = make_app(tmp_path / "unset", keys[1])
    assert _cli(run_cli, unset, "init").returncode == 0
    proc = run_cli("--plan", str(unset / "safehold.toml"), "backup")  # no variables set
    assert "environment variable STRIPE_SECRET_KEY is not set" in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("age") is None, reason="the age binary is not installed")
def test_age_decrypts_what_safehold_stored(
    app: Path, tmp_path: Path, keys: tuple[Path, str], run_cli: RunCli, restic_bin: str
) -> None:
    """Debian's age is the oracle: `safehold dump … | age -d` and docs/format.md's
    `restic dump … | age -d -i key` give back the plaintext."""
    _backed_up(run_cli, app)
    stored = {
        "/secrets/files/certs/a.key.age": (_dump(app, "/secrets/files/certs/a.key.age"), CERT_A),
        "/secrets/env.age": (
            _restic(restic_bin, tmp_path, "dump", "latest", "/secrets/env.age"),
            encode_dotenv(VARIABLES).encode(),
        ),
    }
    for ciphertext, expected in stored.values():
        plain = subprocess.run(
            ["age", "-d", "-i", str(keys[0])], input=ciphertext, capture_output=True, check=True
        ).stdout
        assert plain == expected


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "RESTIC_"))}
    return {**env, "SAFEHOLD_PASSWORD": TEST_PASSWORD, "SAFEHOLD_KDF_N": "1024"}


def test_plan_errors_are_one_line(tmp_path: Path, keys: tuple[Path, str]) -> None:
    app = make_app(tmp_path, keys[1])
    text = (app / "safehold.toml").read_text()
    cases = {
        f'recipients = ["{keys[1]}"]': ("recipients = []", "at least one age public key"),
        'files = [".env", "config/master.key", "certs/*.key"]': (
            'files = ["../outside.key"]',
            "a path relative to the plan folder",
        ),
    }
    for good, (bad, expected) in cases.items():
        with pytest.raises(PlanError) as caught:
            parse_plan(text.replace(good, bad), file=app / "safehold.toml", environ={})
        assert expected in str(caught.value) and "\n" not in str(caught.value).strip()
    with pytest.raises(PlanError) as caught:
        parse_plan(text.replace(keys[1], "age1notakey"), file=app / "safehold.toml", environ={})
    assert "an age public key like age1" in str(caught.value)


def test_dotenv_round_trip_and_age_form() -> None:
    values = {"A": "plain", "B": 'quo"te $X \\ \n\t end', "C": ""}
    assert parse_dotenv(encode_dotenv(values)) == values
    recipient = pyrage.x25519.Identity.generate().to_public()
    for size in (0, 1, 65536, 65537, 200_000):
        data = pyrage.encrypt(b"x" * size, [recipient])
        assert age_form_problem(data, size) == ""
        assert "truncated" in age_form_problem(data[:-1], size)
    assert "not an age file" in age_form_problem(b"plain text", 10)


def test_a_snapshot_from_before_the_index_still_restores_verified(
    app: Path, tmp_path: Path, keys: tuple[Path, str], run_cli: RunCli
) -> None:
    """Old manifests carried each item's plaintext `sha256` and no index: restore verifies
    with it; a wrong one is refused and nothing is written."""
    import safehold
    from safehold.errors import IntegrityError
    from safehold.sources.from_plan import build_source

    _backed_up(run_cli, app)
    env = {**_cli_env(), **VARIABLES}
    plan = safehold.load_plan(app / "safehold.toml", environ=env)
    repo = safehold.open_repository(plan, environ=env)
    snapshot = safehold.snapshots(repo, plan)[-1]
    manifest = dict(snapshot.safehold["sources"]["secrets"])
    plain = {".env": DOTENV, "certs/a.key": CERT_A, "certs/b.key": CERT_B,
             "config/master.key": MASTER_KEY, "env": encode_dotenv(VARIABLES).encode()}  # fmt: skip
    legacy = [
        {**{k: v for k, v in item.items() if k != "age_sha256"},
         "sha256": hashlib.sha256(plain[item["name"]]).hexdigest()}
        for item in manifest.pop("items")
    ]  # fmt: skip
    del manifest["index"]
    source = build_source(plan.source("secrets"), plan, identity=keys[0], environ=env)
    report = source.restore(repo, snapshot, {**manifest, "items": legacy}, str(tmp_path / "old"))
    assert report.details["verified"] and (tmp_path / "old" / "certs" / "a.key").read_bytes() == (
        CERT_A
    )
    legacy[0]["sha256"] = "0" * 64
    with pytest.raises(IntegrityError, match="SHA-256 differs"):
        source.restore(repo, snapshot, {**manifest, "items": legacy}, str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()
