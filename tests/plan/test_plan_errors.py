"""Every validation error is one line: `<file>: <key.path>: expected <what>; found <what>`."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.errors import ExitCode, SafeholdError
from safehold.plan import PlanError, load_plan
from tests.plan.helpers import DESTINATION, HEAD, MINIMAL, SOURCE, ErrorOf

FILES = '\n[[sources]]\nname = "uploads"\ntype = "files"\npaths = ["uploads"]\n'


def replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


CASES: dict[str, tuple[str, str]] = {
    "unknown source type": (
        HEAD + SOURCE + '\n[[sources]]\nname = "x"\ntype = "postgress"\n' + DESTINATION,
        "sources[1].type: expected one of postgres, mysql, sqlite, files, command, bucket, "
        "secrets; "
        'found "postgress"',
    ),
    "missing source type": (
        HEAD + '\n[[sources]]\nname = "x"\n' + DESTINATION,
        "sources[0].type: expected one of postgres, mysql, sqlite, files, command, bucket, "
        "secrets; "
        "found nothing",
    ),
    "bad duration": (
        replace(MINIMAL, 'rpo = "24h"', 'rpo = "soon"'),
        'targets.rpo: expected a duration like 15m, 1h or 7d; found "soon"',
    ),
    "duration as a number": (
        replace(MINIMAL, 'rpo = "24h"', "rpo = 3600"),
        "targets.rpo: expected a duration like 15m, 1h or 7d; found 3600",
    ),
    "zero duration": (
        replace(MINIMAL, 'rto = "1h"', 'rto = "0m"'),
        'targets.rto: expected a duration longer than 0s; found "0s"',
    ),
    "negative duration": (
        replace(MINIMAL, 'rto = "1h"', 'rto = "-1h"'),
        'targets.rto: expected a duration like 15m, 1h or 7d; found "-1h"',
    ),
    "missing rto": (
        replace(MINIMAL, 'rto = "1h"\n', ""),
        "targets.rto: expected a duration like 15m, 1h or 7d; found nothing",
    ),
    "missing targets": (
        replace(MINIMAL, '[targets]\nrpo = "24h"\nrto = "1h"\n', ""),
        "targets: expected a [targets] table with rpo and rto; found nothing",
    ),
    "targets not a table": (
        replace(MINIMAL, '[targets]\nrpo = "24h"\nrto = "1h"\n', 'targets = "1h"\n'),
        'targets: expected a [targets] table with rpo and rto; found "1h"',
    ),
    "misspelt key": (
        replace(MINIMAL, "url =", "urll ="),
        "sources[0].urll: unknown key (did you mean url?)",
    ),
    "unknown top-level key": (
        "colour = 1\n" + MINIMAL,
        "colour: unknown key",
    ),
    "unknown key in targets": (
        replace(MINIMAL, 'rto = "1h"', 'rto = "1h"\nrtoo = "2h"'),
        "targets.rtoo: unknown key (did you mean rto?)",
    ),
    "no destinations": (
        HEAD + SOURCE,
        "destinations: expected at least one destination; found none",
    ),
    "empty destinations": (
        "destinations = []\n" + HEAD + SOURCE,
        "destinations: expected at least one destination; found none",
    ),
    "no sources": (
        HEAD + DESTINATION,
        "sources: expected at least one source; found none",
    ),
    "sources not tables": (
        'sources = ["db"]\n' + HEAD + DESTINATION,
        'sources[0]: expected a table; found "db"',
    ),
    "missing app": (
        replace(MINIMAL, 'app = "myapp"\n', ""),
        "app: expected an app name like myapp; found nothing",
    ),
    "bad app name": (
        replace(MINIMAL, '"myapp"', '"My App"'),
        'app: expected an app name like myapp; found "My App"',
    ),
    "bad env name": (
        replace(MINIMAL, 'env = "prod"', "env = 1"),
        "env: expected an environment name like prod; found 1",
    ),
    "bad source name": (
        replace(MINIMAL, 'name = "db"', 'name = "-db"'),
        'sources[0].name: expected a source name like db or uploads; found "-db"',
    ),
    "duplicate source name": (
        HEAD + SOURCE + SOURCE + DESTINATION,
        'sources[1].name: expected a unique source name; found "db" (also the name of sources[0])',
    ),
    "duplicate destination name": (
        MINIMAL + DESTINATION,
        "destinations[1].name: expected a unique destination name; "
        'found "local" (also the name of destinations[0])',
    ),
    "postgres url scheme": (
        replace(MINIMAL, "postgresql://", "mysql://"),
        "sources[0].url: expected a postgresql:// or postgres:// URL; "
        'found "mysql://app@db.internal:5432/shop"',
    ),
    "postgres url with driver": (
        replace(MINIMAL, "postgresql://", "postgresql+psycopg2://"),
        "sources[0].url: expected a postgresql:// or postgres:// URL; "
        'found "postgresql+psycopg2://app@db.internal:5432/shop"',
    ),
    "missing url": (
        replace(MINIMAL, 'url = "postgresql://app@db.internal:5432/shop"\n', ""),
        "sources[0].url: expected a postgresql:// or postgres:// URL; found nothing",
    ),
    "mysql url scheme": (
        HEAD + '[[sources]]\nname = "m"\ntype = "mysql"\nurl = "postgres://h/db"\n' + DESTINATION,
        'sources[0].url: expected a mysql:// or mariadb:// URL; found "postgres://h/db"',
    ),
    "jobs out of range": (
        replace(MINIMAL, '5432/shop"\n', '5432/shop"\njobs = 65\n'),
        "sources[0].jobs: expected a whole number from 1 to 64; found 65",
    ),
    "jobs as text": (
        replace(MINIMAL, '5432/shop"\n', '5432/shop"\njobs = "4"\n'),
        'sources[0].jobs: expected a whole number from 1 to 64; found "4"',
    ),
    "globals as text": (
        replace(MINIMAL, '5432/shop"\n', '5432/shop"\nglobals = "yes"\n'),
        'sources[0].globals: expected true or false; found "yes"',
    ),
    "databases as text": (
        replace(MINIMAL, '5432/shop"\n', '5432/shop"\ndatabases = "shop"\n'),
        'sources[0].databases: expected a list of database names, like ["shop"]; found "shop"',
    ),
    "database name not text": (
        replace(MINIMAL, '5432/shop"\n', '5432/shop"\ndatabases = ["shop", 5]\n'),
        "sources[0].databases[1]: expected a database name; found 5",
    ),
    "files without paths": (
        HEAD + '[[sources]]\nname = "f"\ntype = "files"\n' + DESTINATION,
        'sources[0].paths: expected a list of folders or files, like ["uploads"]; found nothing',
    ),
    "files with empty paths": (
        HEAD + '[[sources]]\nname = "f"\ntype = "files"\npaths = []\n' + DESTINATION,
        "sources[0].paths: expected at least one path; found none",
    ),
    "files with an empty path": (
        HEAD + '[[sources]]\nname = "f"\ntype = "files"\npaths = ["a", ""]\n' + DESTINATION,
        'sources[0].paths[1]: expected a path; found ""',
    ),
    "exclude not text": (
        HEAD + FILES + "exclude = [1]\n" + DESTINATION,
        "sources[0].exclude[0]: expected text in quotes; found 1",
    ),
    "empty command": (
        HEAD + '[[sources]]\nname = "c"\ntype = "command"\ncommand = "  "\n' + DESTINATION,
        'sources[0].command: expected some text; found "  "',
    ),
    "missing command": (
        HEAD + '[[sources]]\nname = "c"\ntype = "command"\n' + DESTINATION,
        "sources[0].command: expected the command line whose output is the backup; found nothing",
    ),
    "command filename with a folder": (
        HEAD
        + '[[sources]]\nname = "c"\ntype = "command"\ncommand = "x"\nfilename = "a/b"\n'
        + DESTINATION,
        'sources[0].filename: expected a plain file name like billing.json; found "a/b"',
    ),
    "command timeout": (
        HEAD
        + '[[sources]]\nname = "c"\ntype = "command"\ncommand = "x"\ntimeout = "1 hour"\n'
        + DESTINATION,
        'sources[0].timeout: expected a duration like 15m, 1h or 7d; found "1 hour"',
    ),
    "sqlite without path": (
        HEAD + '[[sources]]\nname = "s"\ntype = "sqlite"\n' + DESTINATION,
        "sources[0].path: expected the path of the SQLite database file; found nothing",
    ),
    "s3 repository": (
        replace(MINIMAL, '"backups"', '"s3:s3.amazonaws.com/bucket"'),
        "destinations[0].repository: expected a local folder path (s3: locations go in url); "
        'found "s3:s3.amazonaws.com/bucket"',
    ),
    "sftp repository": (
        replace(MINIMAL, '"backups"', '"sftp:user@host:/srv/backups"'),
        "destinations[0].repository: expected a local folder path (sftp: locations go in url); "
        'found "sftp:user@host:/srv/backups"',
    ),
    "s3 destination without url": (
        MINIMAL + 'type = "s3"\n',
        'destinations[0]: expected url = "s3:…" for a s3 destination; found repository',
    ),
    "unknown destination type": (
        MINIMAL + 'type = "b2"\n',
        'destinations[0].type: expected one of local, s3, sftp; found "b2"',
    ),
    "url on a local destination": (
        replace(MINIMAL, 'repository = "backups"', 'url = "s3:http://127.0.0.1:9/b"'),
        "destinations[0]: expected repository for a local destination; found url",
    ),
    "two password sources": (
        MINIMAL + 'password_env = "X"\npassword_command = "pass show x"\n',
        "destinations[0]: expected only one of password_env, password_file or password_command; "
        "found password_env and password_command",
    ),
    "bad password_env": (
        MINIMAL + 'password_env = "not a name"\n',
        "destinations[0].password_env: expected an environment variable name like "
        'SAFEHOLD_PASSWORD; found "not a name"',
    ),
    "password key": (
        MINIMAL + 'password = "hunter2"\n',
        "destinations[0].password: unknown key (did you mean password_env?)",
    ),
    "approvers not a list": (
        MINIMAL + '[owners]\nrestore_approvers = "alice"\n',
        'owners.restore_approvers: expected a list of people, like ["alice@example.com"]; '
        'found "alice"',
    ),
    "contact not text": (
        MINIMAL + "[owners.contacts]\nbob = 5\n",
        "owners.contacts.bob: expected some text; found 5",
    ),
    "retention not a table": (
        "retention = 7\n" + MINIMAL,
        "retention: expected a [retention] table; found 7",
    ),
    "toml syntax": (
        replace(MINIMAL, 'env = "prod"', "env = prod"),
        "line 2, column 7: invalid TOML: invalid value",
    ),
    "toml table syntax": (
        replace(MINIMAL, "[[destinations]]", "[[destinations]"),
        "line 13, column 15: invalid TOML: expected ']]' at the end of an array declaration",
    ),
    "toml duplicate key": (
        replace(MINIMAL, 'env = "prod"', 'env = "prod"\nenv = "dev"'),
        "line 3, column 12: invalid TOML: cannot overwrite a value",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line_message(error_of: ErrorOf, case: str) -> None:
    text, expected = CASES[case]
    error = error_of(text)
    assert error.message == f"safehold.toml: {expected}"
    assert "\n" not in error.message
    assert error.hint and "\n" not in error.hint
    assert isinstance(error, SafeholdError)
    assert error.exit_code == ExitCode.ERROR


@pytest.mark.parametrize("case", list(CASES))
def test_no_pydantic_wording_leaks(error_of: ErrorOf, case: str) -> None:
    error = error_of(CASES[case][0])
    text = " ".join([error.message, error.hint, *error.problems]).lower()
    for word in ("pydantic", "http", "validation error", "input_value", "type=", "field required"):
        assert word not in text


def test_hints(error_of: ErrorOf) -> None:
    assert error_of(CASES["unknown source type"][0]).hint == (
        'did you mean postgres? (sources[1] is the source "x")'
    )
    assert error_of(CASES["missing targets"][0]).hint == "add a [targets] table"
    assert error_of(CASES["missing rto"][0]).hint == "add rto = … to targets"
    assert error_of(CASES["s3 repository"][0]).hint == (
        'write type = "s3" and url = "s3:s3.amazonaws.com/bucket" instead of repository'
    )
    hint = error_of(CASES["unknown key in targets"][0]).hint
    assert hint == "the keys allowed here are: rpo, rto"
    hint = error_of(CASES["bad duration"][0]).hint
    assert (
        hint
        == '"soon" is not whole numbers followed by units; units: s, m, h, d, w, like 90s or 1h30m'
    )


def test_all_problems_are_listed(error_of: ErrorOf) -> None:
    text = replace(replace(MINIMAL, 'rpo = "24h"', 'rpo = "x"'), 'env = "prod"', 'env = "P"')
    error = error_of(text)
    assert error.problems == [
        'safehold.toml: env: expected an environment name like prod; found "P"',
        'safehold.toml: targets.rpo: expected a duration like 15m, 1h or 7d; found "x"',
    ]
    assert error.message == error.problems[0]
    assert error.hint.endswith("(1 more problem in this file)")


def test_unknown_key_comes_before_the_key_it_was_meant_to_be(error_of: ErrorOf) -> None:
    error = error_of(replace(MINIMAL, "url =", "URL ="))
    assert error.message == "safehold.toml: sources[0].URL: unknown key (did you mean url?)"
    assert len(error.problems) == 2


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan(cwd=tmp_path, environ={})
    assert caught.value.message == "safehold.toml: no plan file here"
    assert "SAFEHOLD_PLAN" in caught.value.hint
    with pytest.raises(PlanError) as caught:
        load_plan(cwd=tmp_path, environ={"SAFEHOLD_PLAN": "/nowhere/plan.toml"})
    assert caught.value.message == "/nowhere/plan.toml: no plan file here (from SAFEHOLD_PLAN)"


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "safehold.toml").write_bytes(b'app = "\xff"\n')
    with pytest.raises(PlanError) as caught:
        load_plan(cwd=tmp_path, environ={})
    assert caught.value.message == "safehold.toml: expected UTF-8 text; found other bytes"


def test_label_is_the_path_as_seen_from_cwd(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "safehold.toml").write_text("app = 1\n")
    with pytest.raises(PlanError) as caught:
        load_plan(Path("deploy"), cwd=tmp_path, environ={})
    assert caught.value.message.startswith("deploy/safehold.toml: app: ")
    with pytest.raises(PlanError) as caught:
        load_plan(tmp_path / "deploy" / "safehold.toml", cwd=tmp_path / "deploy", environ={})
    assert caught.value.message.startswith("safehold.toml: app: ")
