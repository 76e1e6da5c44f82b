"""The one way in: which password source wins, what each kind does when it fails, and the
.env rule — with real files, real commands and real local repositories (no mocks)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

import pytest

from safehold.app.opener import (
    COPY_SOURCE,
    PasswordSource,
    RepositoryRequest,
    command_environment,
    destination_password_source,
    init_repository,
    kdf_from_environment,
    load_cli_plan,
    open_destination,
    open_repository,
    request_password_source,
    resolve_password,
)
from safehold.errors import (
    PasswordSourceError,
    RepositoryNotFoundError,
    SafeholdError,
    UsageError,
    WrongPasswordError,
)
from safehold.ops.jobs import job_environment
from safehold.plan.models import Plan
from safehold.redaction import redact
from safehold.repo.key import DEFAULT_KDF

SECRET = "opener test secret 7f3a"
FAST = {"SAFEHOLD_KDF_N": "1024"}

PLAN = """\
app = "shop"
env = "prod"

[targets]
rpo = "24h"
rto = "1h"

[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]

[[destinations]]
name = "local"
repository = "backups/local"

[[destinations]]
name = "offsite"
repository = "backups/offsite"
password_env = "OFFSITE_PASSWORD"
"""


def _source(request: RepositoryRequest, environ: Mapping[str, str]) -> tuple[str, str, str]:
    found = request_password_source(request, environ, can_ask=False)
    return found.kind, found.value, found.origin


def _text(err: SafeholdError) -> str:
    return f"{err.message}\n{err.hint}"


def _failure(source: PasswordSource, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(PasswordSourceError) as caught:
        resolve_password(source, environ or {})
    text = _text(caught.value)
    assert "\n" not in caught.value.message  # one line + a hint
    assert SECRET not in text
    return text


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    (tmp_path / "uploads").mkdir()
    (tmp_path / "safehold.toml").write_text(PLAN)
    return load_cli_plan(str(tmp_path / "safehold.toml"), {})


# ----- the order ---------------------------------------------------------------------------


def test_each_kind_is_found_and_read(secret_file: Path) -> None:
    command = f"cat {shlex.quote(str(secret_file))}"
    cases = [
        (RepositoryRequest(password_file=str(secret_file)), {}, "--password-file"),
        (RepositoryRequest(password_command=command), {}, "--password-command"),
        (
            RepositoryRequest(),
            {"SAFEHOLD_PASSWORD_FILE": str(secret_file)},
            "SAFEHOLD_PASSWORD_FILE",
        ),
        (RepositoryRequest(), {"SAFEHOLD_PASSWORD_COMMAND": command}, "SAFEHOLD_PASSWORD_COMMAND"),
        (RepositoryRequest(), {"SAFEHOLD_PASSWORD": SECRET}, "the environment"),
    ]
    for request, environ, origin in cases:
        source = request_password_source(request, environ, can_ask=False)
        assert source.origin == origin
        assert resolve_password(source, environ) == SECRET.encode()
    assert SECRET not in redact(f"it was {SECRET}")  # every password found is registered


def test_a_prompt_comes_last_and_only_when_someone_can_ask() -> None:
    asked: list[tuple[str, bool]] = []

    def ask(prompt: str, confirm: bool) -> bytes:
        asked.append((prompt, confirm))
        return SECRET.encode()

    source = request_password_source(RepositoryRequest(), {}, can_ask=True)
    assert source.kind == "prompt"
    assert resolve_password(source, {}, ask=ask, confirm=True) == SECRET.encode()
    assert asked == [("enter password for the repository: ", True)]
    with pytest.raises(PasswordSourceError, match="no repository password given") as caught:
        request_password_source(RepositoryRequest(), {}, can_ask=False)
    assert "--password-file" in caught.value.hint and "SAFEHOLD_PASSWORD" in caught.value.hint
    with pytest.raises(PasswordSourceError, match="empty password"):
        resolve_password(source, {}, ask=lambda _prompt, _confirm: b"")


def test_conflicts_follow_one_order(secret_file: Path) -> None:
    every_env = {
        "SAFEHOLD_PASSWORD_FILE": "/env/file",
        "SAFEHOLD_PASSWORD_COMMAND": "env-command",
        "SAFEHOLD_PASSWORD": "env-variable",
    }
    both_flags = RepositoryRequest(password_file="/flag/file", password_command="flag-command")
    assert _source(both_flags, every_env) == ("file", "/flag/file", "--password-file")
    # a flag typed for this command beats the environment, whatever its kind
    command_flag = RepositoryRequest(password_command="flag-command")
    assert _source(command_flag, every_env) == ("command", "flag-command", "--password-command")
    # in the environment: file, then command, then the variable; an empty one is unset
    assert _source(RepositoryRequest(), every_env)[2] == "SAFEHOLD_PASSWORD_FILE"
    no_file = {**every_env, "SAFEHOLD_PASSWORD_FILE": ""}
    assert _source(RepositoryRequest(), no_file)[2] == "SAFEHOLD_PASSWORD_COMMAND"
    only_variable = {**no_file, "SAFEHOLD_PASSWORD_COMMAND": ""}
    assert _source(RepositoryRequest(), only_variable)[:2] == ("variable", "SAFEHOLD_PASSWORD")


def test_a_copy_source_reads_only_the_from_variables(secret_file: Path) -> None:
    target_only = {"SAFEHOLD_PASSWORD": "the target's", "SAFEHOLD_PASSWORD_FILE": "/target"}
    source_request = RepositoryRequest(role=COPY_SOURCE)
    with pytest.raises(PasswordSourceError, match="no source repository password given"):
        request_password_source(source_request, target_only, can_ask=False)
    both = {**target_only, "SAFEHOLD_FROM_PASSWORD_FILE": str(secret_file)}
    assert _source(source_request, both)[2] == "SAFEHOLD_FROM_PASSWORD_FILE"
    flagged = RepositoryRequest(password_command="x", role=COPY_SOURCE)
    assert _source(flagged, both) == ("command", "x", "--from-password-command")


def test_a_destination_uses_its_one_key_and_never_falls_through(plan: Plan) -> None:
    _, offsite = plan.destinations
    environ = {"SAFEHOLD_PASSWORD": "the local one", "SAFEHOLD_PASSWORD_FILE": "/elsewhere"}
    assert destination_password_source(offsite, environ).value == "OFFSITE_PASSWORD"
    text = _failure(destination_password_source(offsite, environ), environ)
    assert text.startswith("destination offsite: the password variable OFFSITE_PASSWORD is not set")


def test_a_destination_without_a_key_takes_the_environment_in_the_one_order(
    plan: Plan, tmp_path: Path
) -> None:
    local, _ = plan.destinations
    assert not local.password_key_given
    assert destination_password_source(local, {}).value == "SAFEHOLD_PASSWORD"  # init's default
    secret_file = tmp_path / "pw"
    secret_file.write_text("from the file\n")
    environ = {
        "SAFEHOLD_PASSWORD": "the variable",
        "SAFEHOLD_PASSWORD_COMMAND": "echo from the command",
        "SAFEHOLD_PASSWORD_FILE": str(secret_file),
    }
    assert resolve_password(destination_password_source(local, environ), environ) == (
        b"from the file"
    )
    del environ["SAFEHOLD_PASSWORD_FILE"]
    assert resolve_password(destination_password_source(local, environ), environ) == (
        b"from the command"
    )
    del environ["SAFEHOLD_PASSWORD_COMMAND"]
    assert resolve_password(destination_password_source(local, environ), environ) == (
        b"the variable"
    )
    assert "SAFEHOLD_PASSWORD_FILE" in local.password_source()


# ----- failures name where, never the password ------------------------------------------


def test_a_missing_or_empty_file(tmp_path: Path) -> None:
    missing = PasswordSource("file", str(tmp_path / "nope"), "SAFEHOLD_PASSWORD_FILE")
    text = _failure(missing)
    assert "cannot read the password file" in text and str(tmp_path / "nope") in text
    assert "SAFEHOLD_PASSWORD_FILE" in text
    (tmp_path / "empty").write_text("\n")
    text = _failure(PasswordSource("file", str(tmp_path / "empty"), "--password-file"))
    assert "is empty" in text and "--password-file" in text


def test_a_failing_or_silent_command() -> None:
    leaky = f"sh -c {shlex.quote(f'echo {SECRET}; echo {SECRET} >&2; exit 3')}"
    text = _failure(PasswordSource("command", leaky, "--password-command"))
    assert "exited with status 3" in text and "--password-command" in text
    text = _failure(PasswordSource("command", "/no/such/program", "SAFEHOLD_PASSWORD_COMMAND"))
    assert "could not run" in text and "SAFEHOLD_PASSWORD_COMMAND" in text
    text = _failure(PasswordSource("command", "true", "password_command", "destination x"))
    assert text.startswith("destination x: the password command printed nothing")


def test_an_empty_variable_counts_as_unset() -> None:
    text = _failure(PasswordSource("variable", "SAFEHOLD_PASSWORD", "password_env"), {})
    assert "SAFEHOLD_PASSWORD is not set" in text
    text = _failure(PasswordSource("variable", "X_PW", "password_env"), {"X_PW": ""})
    assert "X_PW is not set" in text


# ----- opening ---------------------------------------------------------------------------


def test_open_and_init_a_typed_repository(tmp_path: Path) -> None:
    location = str(tmp_path / "repo")
    environ = {**FAST, "SAFEHOLD_REPOSITORY": location, "SAFEHOLD_PASSWORD": SECRET}
    created = init_repository(RepositoryRequest(), environ)
    assert open_repository(RepositoryRequest(), environ).config.id == created.config.id
    with pytest.raises(WrongPasswordError) as caught:
        open_repository(RepositoryRequest(location), {"SAFEHOLD_PASSWORD": "not it"})
    assert "SAFEHOLD_PASSWORD" in caught.value.hint and "not it" not in _text(caught.value)
    with pytest.raises(UsageError, match="no repository given"):
        open_repository(RepositoryRequest(), {})


def test_a_missing_repository_fails_before_asking(tmp_path: Path) -> None:
    def ask(_prompt: str, _confirm: bool) -> bytes:
        raise AssertionError("asked for a password")

    with pytest.raises(RepositoryNotFoundError, match="no repository at"):
        open_repository(RepositoryRequest(str(tmp_path / "none")), {}, ask=ask)
    with pytest.raises(RepositoryNotFoundError, match="no source repository at"):
        open_repository(RepositoryRequest(str(tmp_path / "none"), role=COPY_SOURCE), {}, ask=ask)


def test_kdf_from_environment() -> None:
    assert kdf_from_environment({}) == DEFAULT_KDF
    assert kdf_from_environment(FAST).n == 1024
    with pytest.raises(UsageError, match="power of two"):
        kdf_from_environment({"SAFEHOLD_KDF_N": "1000"})


# ----- the .env rule -------------------------------------------------------------------------


def test_a_destination_finds_its_password_in_the_env_file_beside_the_plan(
    plan: Plan, tmp_path: Path
) -> None:
    location = str(plan.destinations[1].repository)
    init_repository(RepositoryRequest(location), {**FAST, "SAFEHOLD_PASSWORD": SECRET})
    (tmp_path / ".env").write_text(f"OFFSITE_PASSWORD='{SECRET}'\n")
    assert open_destination(plan, "offsite", {}).config.id
    with pytest.raises(WrongPasswordError) as caught:  # the process's own variable wins
        open_destination(plan, "offsite", {"OFFSITE_PASSWORD": "a wrong one"})
    assert caught.value.message.startswith("destination offsite: wrong password")
    assert "OFFSITE_PASSWORD" in caught.value.hint


def test_typed_commands_and_scheduled_jobs_see_the_same_environment(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"SAFEHOLD_PASSWORD={SECRET}\nONLY_IN_DOTENV=1\n")
    process = {"ONLY_IN_DOTENV": "2", "HOME": str(tmp_path)}
    typed = command_environment(str(tmp_path / "safehold.toml"), process)
    assert typed == job_environment(plan, process)
    assert typed["SAFEHOLD_PASSWORD"] == SECRET and typed["ONLY_IN_DOTENV"] == "2"
    monkeypatch.chdir(tmp_path)  # ./safehold.toml is found like --plan
    assert command_environment(None, process) == typed
    monkeypatch.chdir(tmp_path / "uploads")  # no plan: the process's environment only
    assert command_environment(None, process) == process
