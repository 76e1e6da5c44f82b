"""The runbook's incident page: the first 10 minutes after a bad deploy (freeze, evidence,
scope, decide, diff, recover, unfreeze), "this server is gone", the fallback with the restic
binary alone, and the last incidents recorded in the repository.

Every command is written as it must be typed for this plan: a database URL is never shown
masked (a `***` URL fails when pasted); it is the variable the plan reads it from
(`"$APP_DB_URL"`), or, when the plan holds it literally, a variable to set from the plan or
the password manager."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from safehold.app.incident import IncidentRecord
from safehold.drills.blocks import Block
from safehold.plan.models import (
    AnySource,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SQLiteConfig,
)
from safehold.redaction import url_password
from safehold.version import __version__

_VARIABLE = re.compile(r"[^A-Z0-9]+")
_LAST_INCIDENTS = 3
_TIMELINE_LINES = 30


def typed_url(plan: Plan, source: PostgresConfig | MySQLConfig) -> tuple[str, str]:
    """(the URL as the user types it, where its secret comes from). From a `${VAR}`: the
    variable, in double quotes so the shell fills it in; a literal URL without password: as
    is; a literal URL with a password: a variable named after the source, to be set first."""
    index = plan.sources.index(source)
    url = source.url
    for item in plan.substitutions:
        if item.path == f"sources[{index}].url" and item.value:
            if item.value == url:
                where = f"the variable {item.variable} (the environment or the plan's .env)"
                if source.credentials_at:
                    where += f"; its password is in {source.credentials_at}"
                return f'"${item.variable}"', where
            url = url.replace(item.value, "${" + item.variable + "}")
    if "${" in url:
        return f'"{url}"', "the variables in it"
    if url_password(url) is None:
        return shlex.quote(url), "no password in the URL (.pgpass, PGPASSWORD or the socket)"
    name = _VARIABLE.sub("_", source.name.upper()).strip("_") + "_URL"
    where = source.credentials_at or "the password manager"
    return f'"${name}"', f"set {name} first: the URL of the plan file, its password from {where}"


def typed_target(plan: Plan, source: AnySource) -> str:
    """A source's live location as a restore's --into takes it, typed ("" when none)."""
    if isinstance(source, PostgresConfig | MySQLConfig):
        return typed_url(plan, source)[0]
    if isinstance(source, SQLiteConfig):
        return shlex.quote(str(source.path))
    if isinstance(source, FilesConfig):
        return shlex.quote(str(source.paths[0]))
    return ""


def _password_lines(plan: Plan) -> list[str]:
    lines = [
        f"repository password of {d.name} ({d.location()}): {d.password_source()}"
        for d in plan.destinations
    ]
    for source in plan.sources:
        if isinstance(source, PostgresConfig | MySQLConfig):
            typed, where = typed_url(plan, source)
            lines.append(f"database {source.name}: the commands write {typed}: {where}")
        elif source.credentials_at:
            lines.append(f"credentials of {source.name}: {source.credentials_at}")
    return lines


def _ten_minutes(plan: Plan) -> list[str]:
    """The commands of the 10-minute path for this plan, in order, with comments."""
    freeze = plan.incident.freeze
    lines = [
        "# 1-3. freeze writes, hold evidence of every source, see the scope (one command):",
        'safehold incident start --why "what happened, ticket"',
    ]
    if not freeze:
        lines.insert(0, "# the plan has no [incident] freeze command: stop writes by hand first")
    lines += [
        "safehold incident status            # the scope again, and everything done so far",
        "safehold snapshots                  # SNAPSHOT below: the last good backup",
        "#   named in the scope and held; not `latest`: backups go on during the incident",
        "#   and the newest one already holds the damage",
        "# 4. decide: code broken only -> roll back the deploy, no restore.",
        "#    data lost -> copy back only what is missing (5); rows and files written since",
        "#    the backup are real: a full restore onto production would lose them.",
        "# 5. diff and recover, source by source:",
    ]
    for source in plan.sources:
        name = shlex.quote(source.name)
        if isinstance(source, PostgresConfig | MySQLConfig | SQLiteConfig):
            lines += [
                f"safehold db diff SNAPSHOT --source {name}",
                f"safehold db recover SNAPSHOT --source {name} --dry-run",
                f"safehold db recover SNAPSHOT --source {name} --yes",
                f"safehold db diff SNAPSHOT --source {name}   # 0 rows missing now",
            ]
        elif isinstance(source, FilesConfig):
            live = typed_target(plan, source)
            base = f"safehold restore SNAPSHOT --source {name} --into {live}"
            lines += [
                f"{base} --only-missing --dry-run",
                f"{base} --only-missing",
                "# changed files back too (newer ones only with --overwrite-newer):",
                f"{base} --changed restore --to-production --yes",
            ]
    lines += [
        "# 6. unfreeze, resume scheduled prune, write the incident record:",
        "safehold incident end",
    ]
    return lines


def _server_gone(plan: Plan) -> list[Block]:

    checkout = Path(__file__).resolve().parents[3]
    found = (checkout / "pyproject.toml").exists()
    source_note = f"This runbook was written by safehold {__version__}" + (
        f", installed from the checkout {checkout}." if found else "."
    )
    where = shlex.quote(str(checkout)) if found else "/path/to/safehold-checkout"
    first = plan.destinations[0]
    return [
        Block("h3", "This server is gone"),
        Block(
            "p",
            "safehold is not on a package index: install it on the new machine from the copy "
            "you keep beside the repository (a wheel or the git checkout). " + source_note,
        ),
        Block(
            "code",
            "\n".join(
                [
                    "# once, now: keep a wheel beside the backups",
                    f"python3 -m pip wheel --no-deps -w ./safehold-wheel {where}",
                    "# on the new machine (Python 3.11+):",
                    "python3 -m venv /opt/safehold && . /opt/safehold/bin/activate",
                    f"pip install ./safehold-wheel/safehold-{__version__}-py3-none-any.whl",
                    "#   or from a git clone of the checkout: pip install ./safehold",
                    f"safehold --version                     # {__version__}",
                    "# the plan file (no secrets) and the password from the password manager:",
                    f"safehold --plan safehold.toml snapshots   # reads {first.location()}",
                ]
            ),
        ),
        Block(
            "p",
            "Then restore every source into the new server as section 4 says (new database "
            "URLs, new folders), verify (section 5), and point the app at them.",
        ),
    ]


def _restic_fallback(plan: Plan) -> list[Block]:

    first = plan.destinations[0]
    lines = [
        "# the repository is restic format v2; the password as above",
        "export RESTIC_PASSWORD_FILE=/path/to/password   # or RESTIC_PASSWORD",
        f"restic -r {shlex.quote(first.location())} snapshots",
        f"restic -r {shlex.quote(first.location())} restore SNAPSHOT --target /srv/restore",
    ]
    for source in plan.sources:
        folder = f"/srv/restore/{source.name}"
        if isinstance(source, PostgresConfig):
            names = source.database_names() or ["DATABASE"]
            if source.globals:
                lines.append(f'psql -d "$NEW_SERVER_URL" -f {folder}/globals.sql   # roles')
            for db in names:
                lines.append(f"psql -d \"$NEW_SERVER_URL\" -c 'CREATE DATABASE {db}'")
                lines.append(f'pg_restore --no-owner -d "$NEW_DATABASE_URL" {folder}/{db}.pgdump')
        elif isinstance(source, MySQLConfig):
            names = source.database_names() or ["DATABASE"]
            for db in names:
                lines.append(f"mariadb -h NEW-HOST -u USER -p -e 'CREATE DATABASE {db}'")
                lines.append(f"mariadb -h NEW-HOST -u USER -p {db} < {folder}/{db}.sql")
        elif isinstance(source, SQLiteConfig):
            lines.append(f"cp {folder}/{source.path.name} /srv/new/{source.path.name}")
        elif isinstance(source, FilesConfig):
            for path in source.paths:
                lines.append(f"cp -a {folder}/{path.name}/. /srv/new/{path.name}/")
    return [
        Block("h3", "Without safehold: the restic binary alone"),
        Block(
            "p",
            "If safehold cannot be installed, restic (https://restic.net, any 0.14+) reads the "
            "repository; each source is a folder of the snapshot:",
        ),
        Block("code", "\n".join(lines)),
    ]


def _incident_lines(record: IncidentRecord) -> list[str]:
    lines = []
    for event in record.timeline[:_TIMELINE_LINES]:
        code = f"  (exit code {event['exit_code']})" if event.get("exit_code") else ""
        lines.append(f"{str(event.get('at', ''))[:19]}  {event.get('what', '')}{code}")
    if len(record.timeline) > _TIMELINE_LINES:
        lines.append(f"... {len(record.timeline) - _TIMELINE_LINES} more")
    return lines


def _last_incidents(incidents: Sequence[IncidentRecord]) -> list[Block]:

    blocks = [Block("h3", "The last incidents")]
    if not incidents:
        blocks.append(Block("p", "None recorded yet."))
        return blocks
    for record in incidents[:_LAST_INCIDENTS]:
        ended = str((record.end or {}).get("ended") or "")[:19] or "STILL OPEN"
        evidence = (record.start.get("evidence") or {}).get("name") or "none"
        blocks.append(
            Block(
                "p",
                f"**{record.opened[:19]} to {ended}**: {record.why} (by "
                f"{record.start.get('who', '?')}; evidence snapshot {evidence}). What ran:",
            )
        )
        blocks.append(Block("code", "\n".join(_incident_lines(record))))
    return blocks


def incident_page(plan: Plan, incidents: Sequence[IncidentRecord] = ()) -> list[Block]:

    freeze = plan.incident.freeze
    unfreeze = plan.incident.unfreeze
    what_start_does = (
        f"runs `{freeze}` (writes stop)" if freeze else "finds no freeze command in the plan "
        '(add `[incident] freeze = "..."`; until then stop writes by hand)'
    )  # fmt: skip
    blocks: list[Block] = [
        Block("h2", "7. Incident: the first 10 minutes"),
        Block(
            "p",
            'A deploy or a person destroyed data ("my orders are gone") and the server is '
            "still up. Work in the folder of the plan file as the user that runs the backups. "
            f"`safehold incident start` {what_start_does}, takes a held evidence snapshot of "
            "every source (forget never removes it; `latest` stays the last complete backup), "
            "pauses scheduled prune, and prints the scope: per table the rows now against "
            "the last good backup, per files source the files removed, added and changed. "
            "`safehold incident end` runs "
            + (f"`{unfreeze}`" if unfreeze else "no unfreeze command (none in the plan)")
            + ", resumes prune and writes the incident record (every command run meanwhile, "
            "with times) into the repository.",
        ),
        Block("p", "Where the secrets are:"),
        Block("ul", items=_password_lines(plan)),
        Block("code", "\n".join(_ten_minutes(plan))),
    ]
    return blocks + _server_gone(plan) + _restic_fallback(plan) + _last_incidents(incidents)
