from __future__ import annotations

from pathlib import Path

import pytest

from safehold.plan import PlanError, load_plan
from safehold.plan.envfile import parse_env_text
from safehold.plan.interpolate import Variables, interpolate_string
from tests.plan.helpers import DESTINATION, HEAD, ErrorOf, LoadText

URL_SOURCE = """
[[sources]]
name = "db"
type = "postgres"
url = "{url}"
"""


def plan_with_url(url: str) -> str:
    return HEAD + URL_SOURCE.format(url=url) + DESTINATION


def expand(text: str, environ: dict[str, str], dotenv: dict[str, str] | None = None) -> str:
    variables = Variables(environ, dotenv or {}, Path("/app/.env"))
    return interpolate_string(text, variables, path="x", label="safehold.toml")[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "1"),
        ("pre-${A}-post", "pre-1-post"),
        ("${A}${B}", "12"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("${A:-fallback}", "1"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a:b/c}", "a:b/c"),
        ("$$", "$"),
        ("$${A}", "${A}"),
        ("cost $5", "cost $5"),
        ("$$$${A}", "$${A}"),
        ("$$${A}", "$1"),
    ],
)
def test_interpolate_string(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "2", "EMPTY": ""}) == expected


def test_real_environment_wins_over_dotenv() -> None:
    assert expand("${A}", {"A": "env"}, {"A": "dotenv"}) == "env"
    assert expand("${A}", {}, {"A": "dotenv"}) == "dotenv"


def test_from_environment_and_dotenv(load_text: LoadText, tmp_path: Path) -> None:
    plan = load_text(
        plan_with_url("postgresql://${DB_USER}@${DB_HOST}:5432/shop"),
        environ={"DB_HOST": "from-env"},
        dotenv="DB_HOST=from-dotenv\nDB_USER=app\n",
    )
    assert plan.sources[0].url == "postgresql://app@from-env:5432/shop"  # type: ignore[union-attr]
    origins = {item.variable: item.origin for item in plan.substitutions}
    assert origins == {"DB_USER": ".env", "DB_HOST": "environment"}
    assert plan.interpolated_paths() == {"sources[0].url"}


def test_missing_variable(error_of: ErrorOf, tmp_path: Path) -> None:
    error = error_of(plan_with_url("${DATABASE_URL}"))
    assert error.message == (
        "safehold.toml: sources[0].url: expected the variable DATABASE_URL to be set; "
        "found it unset"
    )
    assert error.hint == f"set it in the environment or in {tmp_path}/.env"
    assert error.exit_code == 1


def test_missing_variable_in_a_table_key_path(error_of: ErrorOf) -> None:
    text = (
        HEAD
        + URL_SOURCE.format(url="x")
        + DESTINATION
        + '[owners.contacts]\n"bob smith" = "${BOB}"\n'
    )
    error = error_of(text)
    assert error.message.startswith(
        'safehold.toml: owners.contacts."bob smith": expected the variable BOB'
    )


def test_malformed_reference(error_of: ErrorOf) -> None:
    error = error_of(plan_with_url("${DATABASE URL}"))
    assert error.message == (
        "safehold.toml: sources[0].url: expected ${NAME} or ${NAME:-default}; "
        'found "${DATABASE URL}"'
    )
    error = error_of(plan_with_url("${DATABASE_URL"))
    assert error.message == (
        'safehold.toml: sources[0].url: expected ${NAME} or ${NAME:-default}; found "${"'
    )


def test_every_string_value_is_interpolated(load_text: LoadText) -> None:
    text = (
        'app = "${APP}"\nenv = "${ENV:-prod}"\n[targets]\nrpo = "${RPO}"\nrto = "1h"\n'
        + URL_SOURCE.format(url="postgresql://h/db")
        + '[[destinations]]\nname = "local"\nrepository = "${BACKUPS}/x"\n'
        + '[retention]\nkeep = ["${KEEP}"]\n'
    )
    plan = load_text(text, environ={"APP": "shop", "RPO": "15m", "BACKUPS": "/srv", "KEEP": "7d"})
    assert (plan.app, plan.env) == ("shop", "prod")
    assert plan.targets.rpo.total_seconds() == 900
    assert str(plan.destinations[0].repository) == "/srv/x"
    assert plan.retention == {"keep": ["7d"]}


def test_env_file_syntax() -> None:
    text = """
# a comment
export A=1
B = two words  # trailing comment
C="quoted # not a comment"
D='single $HOME \\n'
E="line\\nbreak \\"q\\""
F=
G=a=b
"""
    assert parse_env_text(text) == {
        "A": "1",
        "B": "two words",
        "C": "quoted # not a comment",
        "D": "single $HOME \\n",
        "E": 'line\nbreak "q"',
        "F": "",
        "G": "a=b",
    }


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("JUST_A_NAME", 'a line without "="'),
        ("1BAD=x", "an invalid variable name"),
        ('A="open', "a quote that is not closed"),
    ],
)
def test_env_file_errors_never_show_the_line(line: str, problem: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_env_text(f"OK=1\n{line}\n", label=".env")
    assert caught.value.message == f".env: line 2: expected NAME=value; found {problem}"


def test_bad_dotenv_is_reported_with_its_path(error_of: ErrorOf) -> None:
    error = error_of(plan_with_url("postgresql://h/db"), dotenv="SECRET hunter22\n")
    assert error.message == '.env: line 1: expected NAME=value; found a line without "="'
    assert "hunter22" not in error.message + error.hint


def test_only_the_named_sources_need_their_variables(tmp_path: Path) -> None:
    """Restoring one source on a new machine: the other sources' ${VAR}s may be unset (the
    app's variables can be inside the secrets backup being restored)."""
    (tmp_path / "safehold.toml").write_text(
        'app = "shop"\nenv = "prod"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "db"\ntype = "postgres"\nurl = "${DATABASE_URL}"\n'
        '[[sources]]\nname = "media"\ntype = "files"\npaths = ["${MEDIA_ROOT:-media}"]\n'
        '[[destinations]]\nname = "local"\nrepository = "backups"\n'
    )
    with pytest.raises(PlanError, match="DATABASE_URL"):
        load_plan(cwd=tmp_path, environ={})
    plan = load_plan(cwd=tmp_path, environ={}, only_sources=["media"])
    assert [source.name for source in plan.sources] == ["media"]
    with pytest.raises(PlanError, match="DATABASE_URL"):  # an unknown name filters nothing
        load_plan(cwd=tmp_path, environ={}, only_sources=["nope"])
