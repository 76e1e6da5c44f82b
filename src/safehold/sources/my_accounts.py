"""MariaDB / MySQL users and grants: backed up beside the dumps, replayed on restore.

A dump holds no accounts (they live in the `mysql` schema, which is not backed up), so the
source writes `/<source>/users.json` beside the dumps: for every account except root and the
system ones (`mariadb.sys`, `mysql.*`, `PUBLIC`, anonymous, MariaDB roles) its `SHOW CREATE
USER` (password hash included: the file is in the encrypted snapshot, never the manifest) and
its `SHOW GRANTS`. The manifest keeps the grants on databases, tables and routines (no
secrets) for the check after a restore.

Restore, per restored database (`src` -> `dst`): every account with a grant on `src` that the
target lacks is created (its `CREATE USER` statement, then its global grants), and the grants
on `src` are applied on `dst` (the database name rewritten). Existing accounts are never
altered: no CREATE, no ALTER, no global grant; only the grants on the new database are added.
`roles=False` (`--no-roles`) creates nobody and grants only to accounts that exist.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pymysql  # type: ignore[import-untyped]

USERS_FILE = "users.json"
SYSTEM_USERS = frozenset({"root", "mariadb.sys", "PUBLIC", ""})

_NAME = r"(?:\*|`(?:[^`]|``)+`)"
_GRANT = re.compile(
    rf"^GRANT (?P<privileges>.+?) ON (?:(?P<kind>PROCEDURE|FUNCTION|PACKAGE BODY|PACKAGE) )?"
    rf"(?P<db>{_NAME})\.(?P<object>{_NAME}) TO (?P<rest>.+)$",
    re.DOTALL,
)


def is_system_user(user: str) -> bool:
    return user in SYSTEM_USERS or user.startswith("mysql.")


def account_name(user: str, host: str) -> str:
    return f"{_literal(user)}@{_literal(host)}"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Grant:
    """One `GRANT ... ON db.object TO ...` line of SHOW GRANTS."""

    privileges: str
    kind: str  # "" (tables) or PROCEDURE / FUNCTION / PACKAGE ...
    database: str | None  # None: global (*.*); the name as stored (may hold `\\_`)
    object: str  # `*` or the quoted table / routine
    rest: str  # `'user'@'host' [WITH GRANT OPTION]`

    @classmethod
    def parse(cls, line: str) -> Grant | None:
        match = _GRANT.match(line.strip())
        if match is None:
            return None  # a role grant (GRANT role TO user), or a form we do not know
        db = match.group("db")
        return cls(
            match.group("privileges"), match.group("kind") or "",
            None if db == "*" else _unquote(db), match.group("object"), match.group("rest"),
        )  # fmt: skip

    def on_database(self, name: str) -> bool:
        return self.database is not None and self.database.replace("\\_", "_") == name

    def statement(self, database: str | None = None) -> str:
        """The GRANT, on `database` instead of its own when given."""
        db = self.database if database is None else database
        if database is not None and self.database is not None and "\\_" in self.database:
            db = database.replace("_", "\\_")
        target = "*" if db is None else _quote(db)
        kind = f"{self.kind} " if self.kind else ""
        return f"GRANT {self.privileges} ON {kind}{target}.{self.object} TO {self.rest}"


def _query(conn: Any, query: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(query)  # no args: PyMySQL would %-format the `'%'` of a host
        return list(cursor.fetchall())


def _accounts(conn: Any) -> list[tuple[str, str]]:
    try:
        rows = _query(conn, "SELECT User, Host, is_role FROM mysql.user")
        pairs = [(str(r[0]), str(r[1])) for r in rows if str(r[2]).upper() != "Y"]
    except pymysql.err.MySQLError:  # MySQL: no roles column
        pairs = [(str(r[0]), str(r[1])) for r in _query(conn, "SELECT User, Host FROM mysql.user")]
    return sorted(pair for pair in pairs if not is_system_user(pair[0]))


def read_accounts(conn: Any) -> dict[str, Any]:
    """The accounts of the server (see the module docstring) as the users.json document.
    Raises pymysql.err.MySQLError (e.g. no SELECT on mysql.user); the caller words it."""
    users = []
    for user, host in _accounts(conn):
        name = account_name(user, host)
        create = str(_query(conn, f"SHOW CREATE USER {name}")[0][0])
        grants = [str(row[0]) for row in _query(conn, f"SHOW GRANTS FOR {name}")]
        users.append({"user": user, "host": host, "create": create, "grants": grants})
    return {"format": 1, "users": users}


def recorded_grants(document: dict[str, Any]) -> dict[str, list[str]]:
    """For the manifest: `'user'@'host'` -> its grants on databases, tables and routines (no
    global grant, which may carry a password hash)."""
    recorded: dict[str, list[str]] = {}
    for entry in document.get("users", []):
        grants = [g for g in map(Grant.parse, entry["grants"]) if g and g.database is not None]
        recorded[account_name(entry["user"], entry["host"])] = [g.statement() for g in grants]
    return recorded


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode()


@dataclass
class ReplayOutcome:
    created: list[str]
    granted: int
    problems: list[str]


def replay_accounts(
    conn: Any, document: dict[str, Any], src: str, dst: str, create: bool
) -> ReplayOutcome:
    """Create the accounts with a grant on `src` that the server lacks (when `create`), then
    apply their grants on `src` to `dst`. Failures are problems, not exceptions."""
    outcome = ReplayOutcome([], 0, [])
    present = {(str(r[0]), str(r[1])) for r in _query(conn, "SELECT User, Host FROM mysql.user")}
    for entry in document.get("users", []):
        name = account_name(entry["user"], entry["host"])
        grants = [g for g in map(Grant.parse, entry["grants"]) if g is not None]
        mine = [g for g in grants if g.on_database(src)]
        if not mine:
            continue
        if (entry["user"], entry["host"]) not in present:
            if not create:
                outcome.problems.append(f"user {name} does not exist here (--no-roles)")
                continue
            if not _run(conn, entry["create"], f"user {name}", outcome):
                continue
            outcome.created.append(name)
            for grant in grants:
                if grant.database is None:
                    _run(conn, grant.statement(), f"global grant of {name}", outcome)
        for grant in mine:
            if _run(conn, grant.statement(dst), f"grant of {name} on {dst}", outcome):
                outcome.granted += 1
    return outcome


def _run(conn: Any, statement: str, what: str, outcome: ReplayOutcome) -> bool:
    try:
        _query(conn, statement)
    except pymysql.err.MySQLError as err:
        outcome.problems.append(f"{what}: {err.args[-1] if err.args else err}")
        return False
    return True


def missing_grants(conn: Any, recorded: dict[str, list[str]], src: str, dst: str) -> list[str]:
    """The recorded grants on `src` (moved to `dst`) that the server of `conn` lacks, and the
    accounts it lacks, in words."""
    missing: list[str] = []
    for name, lines in recorded.items():
        wanted = [g for g in map(Grant.parse, lines) if g is not None and g.on_database(src)]
        if not wanted:
            continue
        try:
            rows = _query(conn, f"SHOW GRANTS FOR {name}")
        except pymysql.err.MySQLError:
            missing.append(f"user {name}")
            continue
        have = {_normal(str(row[0])) for row in rows}
        missing.extend(g.statement(dst) for g in wanted if _normal(g.statement(dst)) not in have)
    return missing


def _normal(statement: str) -> str:
    return " ".join(statement.split())
