"""`safehold init`: look at an app's folder, and write a commented starter plan that
`load_plan` accepts as it is. Secrets are always `${VAR}` references, never values; the age
identity of a secrets source is never written here (only its public key, which the caller
generates or takes from SAFEHOLD_AGE_RECIPIENT)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safehold.plan.envfile import read_env_file

DATABASE_VARIABLES = ("DATABASE_URL", "MYSQL_URL", "MARIADB_URL")
FOLDER_NAMES = ("uploads", "media", "storage", "public/uploads")
SQLITE_SUFFIXES = (".sqlite3", ".sqlite", ".db")
SKIP_FOLDERS = frozenset({".venv", "venv", "node_modules", ".git", "__pycache__"})
BUCKET_VARIABLES = ("AWS_STORAGE_BUCKET_NAME", "S3_BUCKET", "AWS_S3_BUCKET", "BUCKET_NAME")
ENDPOINT_VARIABLES = ("AWS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
KEY_VARIABLES = ("AWS_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
SECRET_KEY_VARIABLES = ("AWS_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
REGION_VARIABLES = ("AWS_S3_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION")
AGE_RECIPIENT_ENV = "SAFEHOLD_AGE_RECIPIENT"  # an existing age public key: init uses it
SECRET_FILES = (".env", ".env.production", "config/master.key", "config/credentials.yml.enc")
CERT_FOLDERS = ("certs", "ssl")
CERT_SUFFIXES = (".pem", ".key")
SQLITE_DEPTH = 2  # files in the app folder and up to two folders below it
_NAMES_FOR_VARIABLE = {"DATABASE_URL": "db", "MYSQL_URL": "mysql", "MARIADB_URL": "mariadb"}
_SCHEMES: dict[str, Literal["postgres", "mysql"]] = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}


@dataclass(frozen=True)
class DetectedDatabase:
    """A database URL found in a variable; the plan refers to it as `${variable}`."""

    name: str
    type: Literal["postgres", "mysql"]
    variable: str
    origin: Literal["environment", ".env"]


@dataclass(frozen=True)
class DetectedBucket:
    """An S3 uploads bucket named in a variable, and the variables of its endpoint, keys and
    region when they are set (a key pair only when both halves are)."""

    variable: str
    endpoint_variable: str | None
    origin: Literal["environment", ".env"]
    key_variables: tuple[str, str] | None = None  # (access key id, secret access key)
    region_variable: str | None = None


@dataclass
class Detected:
    """What an app folder seems to need backed up (paths relative to that folder)."""

    databases: list[DetectedDatabase] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    sqlite_files: list[str] = field(default_factory=list)
    buckets: list[DetectedBucket] = field(default_factory=list)
    secret_files: list[str] = field(default_factory=list)  # a secrets source, age-encrypted
    notes: list[str] = field(default_factory=list)  # what was seen but not used, and why

    @property
    def empty(self) -> bool:
        return not (self.databases or self.folders or self.sqlite_files or self.buckets)


def slugify(text: str, *, fallback: str = "app") -> str:
    """`My App_2` -> `my-app-2`: a valid app, env or source name."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or fallback


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _database_sources(
    cwd: Path, environ: Mapping[str, str], detected: Detected, taken: set[str]
) -> None:
    dotenv = read_env_file(cwd / ".env", strict=False)
    for variable in DATABASE_VARIABLES:
        origin: Literal["environment", ".env"]
        if variable in environ:
            value, origin = environ[variable], "environment"
        elif variable in dotenv:
            value, origin = dotenv[variable], ".env"
        else:
            continue
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        kind = _SCHEMES.get(scheme)
        if kind is None:
            shown = f"{scheme}://" if scheme else "no URL scheme"
            detected.notes.append(
                f"{variable} uses {shown}: safehold backs up postgresql://, postgres://, "
                "mysql:// and mariadb:// URLs; add a source for it by hand"
            )
            continue
        name = _unique(_NAMES_FOR_VARIABLE[variable], taken)
        detected.databases.append(DetectedDatabase(name, kind, variable, origin))


def _variable(
    names: tuple[str, ...], environ: Mapping[str, str], dotenv: Mapping[str, str]
) -> tuple[str, Literal["environment", ".env"]] | None:
    for name in names:
        if environ.get(name):
            return name, "environment"
        if dotenv.get(name):
            return name, ".env"
    return None


def _bucket(cwd: Path, environ: Mapping[str, str]) -> list[DetectedBucket]:
    dotenv = read_env_file(cwd / ".env", strict=False)
    found = _variable(BUCKET_VARIABLES, environ, dotenv)
    if found is None:
        return []
    endpoint = _variable(ENDPOINT_VARIABLES, environ, dotenv)
    key = _variable(KEY_VARIABLES, environ, dotenv)
    secret = _variable(SECRET_KEY_VARIABLES, environ, dotenv)
    region = _variable(REGION_VARIABLES, environ, dotenv)
    return [
        DetectedBucket(
            found[0], endpoint[0] if endpoint else None, found[1],
            (key[0], secret[0]) if key and secret else None, region[0] if region else None,
        )
    ]  # fmt: skip


def _secret_files(cwd: Path) -> list[str]:
    files = [name for name in SECRET_FILES if (cwd / name).is_file()]
    for folder in CERT_FOLDERS:
        for path in sorted((cwd / folder).glob("*")) if (cwd / folder).is_dir() else []:
            if path.suffix.lower() in CERT_SUFFIXES and path.is_file():
                files.append(path.relative_to(cwd).as_posix())
    return files


def _walk_files(root: Path, depth: int) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if depth > 0 and entry.name not in SKIP_FOLDERS:
                    yield from _walk_files(Path(entry.path), depth - 1)
            elif entry.is_file():
                yield Path(entry.path)
        except OSError:
            continue


def detect(cwd: Path, environ: Mapping[str, str]) -> Detected:
    """Database URLs (DATABASE_URL, MYSQL_URL, MARIADB_URL in the environment or `.env`),
    upload folders, SQLite files within two folder levels of `cwd`, an S3 uploads bucket
    (AWS_STORAGE_BUCKET_NAME, S3_BUCKET, …) and secret files (.env, config/master.key, …)."""
    detected = Detected()
    taken: set[str] = set()
    _database_sources(cwd, environ, detected, taken)
    detected.buckets = _bucket(cwd, environ)
    detected.secret_files = _secret_files(cwd)
    detected.folders = [name for name in FOLDER_NAMES if (cwd / name).is_dir()]
    for path in _walk_files(cwd, SQLITE_DEPTH):
        if path.suffix.lower() in SQLITE_SUFFIXES:
            detected.sqlite_files.append(path.relative_to(cwd).as_posix())
    return detected


def repository_warning(app_dir: Path, repository: Path) -> str | None:
    """A warning when a local repository would share the app's fate: inside its folder, or
    on the same filesystem (st_dev of the app folder and the repository's nearest existing
    folder); None when it is elsewhere."""
    app_dir, repository = app_dir.resolve(), (app_dir / repository).resolve()
    fix = 'add an offsite destination (type = "s3" or "sftp") to the plan and copy to it'
    if repository.is_relative_to(app_dir):
        return f"the repository {repository} is inside the app folder {app_dir}: {fix}"
    existing = repository
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        same = existing.stat().st_dev == app_dir.stat().st_dev
    except OSError:
        return None
    if same:
        return f"the repository {repository} is on the same disk as the app {app_dir}: {fix}"
    return None


def toml_string(value: str) -> str:
    """A TOML basic string holding `value` literally (`$` doubled against interpolation)."""
    return json.dumps(value.replace("$", "$$"), ensure_ascii=False)


_HEADER = """\
# safehold plan for {app} ({env}): what to back up, where to, and how fast it must restore.
#
# Check it with `safehold plan check`. Relative paths are relative to this file's folder.
# Secrets never go in this file: write ${{VAR}} (or ${{VAR:-default}}) and set VAR in the
# environment or in the .env file next to this file; the environment wins over .env.
# Write $$ for a literal dollar sign. Unknown keys are errors, so typos cannot hide.

app = {app_value}  # lowercase letters, digits and -
env = {env_value}  # e.g. prod, staging

# People, never secrets: who may approve a restore, and how to reach who runs the app.
[owners]
restore_approvers = []  # e.g. ["alice@example.com"]

[owners.contacts]
# alice = "alice@example.com, +1 555 0100"

# Recovery targets. rpo: the most data you can afford to lose (the longest time between
# backups). rto: the longest a full restore may take. Durations: 90s, 15m, 1h, 1h30m, 7d, 2w.
[targets]
rpo = "24h"
rto = "4h"

# What to back up: one [[sources]] table each, with a unique name ([a-z0-9][a-z0-9_-]*) and a
# type: postgres, mysql, sqlite, files, bucket, secrets or command. Every source may also say
#   owner = "alice"                       # who can log in and fix it
#   credentials_at = "1Password, 'prod'"  # where its credentials live (never the secret)
#   notes = "..."                         # for the restore runbook
"""

_POSTGRES = """
[[sources]]
name = {name}
type = "postgres"
url = "${{{variable}}}"  # from the {origin}; postgresql:// or postgres://
databases = []  # empty: the database named in the URL
globals = true  # also roles and grants (pg_dumpall --globals-only)
jobs = 4  # parallel jobs for pg_restore, 1 to 64
"""

_MYSQL = """
[[sources]]
name = {name}
type = "mysql"  # MySQL or MariaDB
url = "${{{variable}}}"  # from the {origin}; mysql:// or mariadb://
databases = []  # empty: the database named in the URL
"""

_SQLITE = """
[[sources]]
name = {name}
type = "sqlite"  # copied consistently, even while the app writes to it
path = {path}
"""

_FILES = """
[[sources]]
name = {name}
type = "files"
paths = [{paths}]
exclude = []  # patterns to skip, e.g. ["*.tmp", "cache/"]
"""

_PLACEHOLDER = """
# Nothing to back up was found, so this is a placeholder: point it at your app's data.
[[sources]]
name = "data"
type = "files"
paths = ["data"]
exclude = []
"""

_EXAMPLES = """
# More kinds of sources (uncomment and edit):
#
# [[sources]]
# name = "db"
# type = "postgres"
# url = "${DATABASE_URL}"
#
# [[sources]]
# name = "shop-db"
# type = "mysql"
# url = "${MYSQL_URL}"
#
# [[sources]]
# name = "app-db"
# type = "sqlite"
# path = "data/app.sqlite3"
#
# [[sources]]
# name = "uploads"
# type = "files"
# paths = ["uploads"]
#
# [[sources]]
# name = "billing"
# type = "command"  # anything whose standard output is the backup
# command = "./scripts/export-billing.sh --format json"  # runs in this file's folder
# filename = "billing.json"  # default: <name>.out
# timeout = "10m"  # default 1h
# notes = "the vendor does not export card numbers; re-collect them on restore"
"""

_DESTINATION = """
# Where backups go: one [[destinations]] table each, a local folder (repository = "…") or
# type = "s3" / "sftp" with url = "s3:https://host/bucket" / "sftp:user@host:/path". Keep one
# copy OFF this machine: a folder on the app's own disk dies with it.
[[destinations]]
name = "local"
repository = {repository}
# The repository password: at most one of these. With none, it comes from the environment
# like every command's: SAFEHOLD_PASSWORD_FILE, SAFEHOLD_PASSWORD_COMMAND or SAFEHOLD_PASSWORD.
# password_env = "SAFEHOLD_PASSWORD"
# password_file = "/etc/safehold/password"
# password_command = "pass show safehold/{app}"

# How long to keep snapshots (default: 7 daily, 4 weekly, 3 monthly, the last 5 predeploy).
# [retention]

# When jobs run by themselves; `safehold schedule install` (or `safehold run` in a container)
# installs it. Every job has a default; see docs/operations.md.
[schedule]
backup = "daily at 02:00"
# copy = "after backup"   # with a second destination
# prune = "weekly"
# drill = "monthly"
# watch = "every 15m"     # alerts when a backup, copy or drill did NOT happen

# Who hears about a failure: any apprise URL (mailto://, slack://, ntfys://, json://…).
# [[alerts.channels]]
# name = "ops"
# url = "${{ALERT_URL}}"
# severity = "warning"    # info, warning or error
"""


def _origin_words(database: DetectedDatabase | DetectedBucket) -> str:
    return "environment" if database.origin == "environment" else ".env file"


def _commented(lines: list[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _bucket_block(bucket: DetectedBucket, name: str) -> str:
    endpoint = (
        f"${{{bucket.endpoint_variable}}}"
        if bucket.endpoint_variable
        else "https://s3.amazonaws.com"
    )
    url = f"s3:{endpoint}/${{{bucket.variable}}}"
    lines = [
        f"\n# The app's S3 uploads bucket, from ${{{bucket.variable}}} in the "
        f"{_origin_words(bucket)}.",
        "[[sources]]",
        f"name = {toml_string(name)}",
        'type = "bucket"',
        f"url = {json.dumps(url)}  # s3:https://endpoint/bucket/prefix",
    ]
    if bucket.key_variables:
        key, secret = bucket.key_variables
        lines += [f'access_key_id = "${{{key}}}"', f'secret_access_key = "${{{secret}}}"']
    else:
        lines += [
            "# No key variables were found: boto3's chain (AWS_* variables, ~/.aws) signs in.",
            '# access_key_id = "${AWS_ACCESS_KEY_ID}"',
            '# secret_access_key = "${AWS_SECRET_ACCESS_KEY}"',
            '# profile = "uploads"  # or a profile from ~/.aws, instead of keys',
        ]
    if bucket.region_variable:
        lines.append(f'region = "${{{bucket.region_variable}}}"')
    lines.append('exclude = []  # key patterns to skip, e.g. ["tmp/*"]')
    return "\n".join(lines) + "\n"


def _secrets_block(files: list[str], name: str, recipient: str | None) -> str:
    listed = ", ".join(toml_string(path) for path in files)
    lines = [
        "[[sources]]",
        f"name = {toml_string(name)}",
        'type = "secrets"',
        f"files = [{listed}]",
        f"recipients = [{json.dumps(recipient or 'age1…')}]  # public keys, never the identity",
        "# Restores and drills decrypt with the identity (AGE-SECRET-KEY-1…), kept in the",
        "# password manager apart from the backups: --identity FILE,",
        "# SAFEHOLD_AGE_IDENTITY_FILE=FILE, or",
        '# identity_command = "pass show safehold/age"  # or op read op://ops/safehold-age/key',
    ]
    head = (
        "\n# Secret and config files the app cannot start without, encrypted with age before"
        "\n# they enter the repository: the repository password alone does not open them.\n"
    )
    if recipient is None:  # no public key was given: the block waits for one
        return head + _commented(["Commented out: put your age public key in recipients.", *lines])
    return head + "\n".join(lines) + "\n"


def render_starter_plan(
    app: str,
    env: str,
    detected: Detected,
    repository_path: str | Path,
    *,
    age_recipient: str | None = None,
) -> str:
    """A commented starter `safehold.toml` for what `detect` found. `app` and `env` are made
    valid names; `repository_path` is written as given (relative = to the plan's folder).
    Secret files become a secrets source encrypted to `age_recipient` (a public key); without
    one that source is written commented out."""
    app, env = slugify(app, fallback="app"), slugify(env, fallback="prod")
    parts = [
        _HEADER.format(app=app, env=env, app_value=toml_string(app), env_value=toml_string(env))
    ]
    for note in detected.notes:
        parts.append(f"\n# Not added: {note}\n")
    for database in detected.databases:
        template = _POSTGRES if database.type == "postgres" else _MYSQL
        parts.append(
            template.format(
                name=toml_string(database.name),
                variable=database.variable,
                origin=_origin_words(database),
            )
        )
    taken = {database.name for database in detected.databases}
    for sqlite_file in detected.sqlite_files:
        stem = Path(sqlite_file).name.split(".")[0]
        name = _unique(slugify(stem, fallback="sqlite"), taken)
        parts.append(_SQLITE.format(name=toml_string(name), path=toml_string(sqlite_file)))
    if detected.folders:
        paths = ", ".join(toml_string(folder) for folder in detected.folders)
        first = slugify(Path(detected.folders[0]).name, fallback="files")
        parts.append(_FILES.format(name=toml_string(_unique(first, taken)), paths=paths))
    parts += [_bucket_block(bucket, _unique("bucket", taken)) for bucket in detected.buckets]
    if detected.secret_files:
        name = _unique("secrets", taken) if age_recipient else "secrets"
        parts.append(_secrets_block(detected.secret_files, name, age_recipient))
    if detected.empty and not (detected.secret_files and age_recipient):
        parts.append(_PLACEHOLDER)
    parts.append(_EXAMPLES)
    parts.append(_DESTINATION.format(repository=toml_string(str(repository_path)), app=app))
    return "".join(parts)
