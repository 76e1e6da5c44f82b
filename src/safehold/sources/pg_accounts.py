"""PostgreSQL roles and grants: replaying the backup's globals, and proving they came along.

`globals.sql` (`pg_dumpall --globals-only`) is the record of the roles: per role a
`CREATE ROLE name;`, an `ALTER ROLE name WITH <attributes> [PASSWORD '<hash>'];`, settings
(`ALTER ROLE name SET ...`), comments, and `GRANT group TO member ... GRANTED BY x;` for the
memberships. A restore does NOT run that file: it would alter the roles the target already
has. `replay_roles` creates only the roles the target lacks, each in one statement,
`CREATE ROLE name WITH <the backup's attributes>` (so a non-superuser with CREATEROLE can
create ordinary roles), then their settings and comments, then the memberships whose member
it created (`GRANTED BY` dropped: the grantor may not exist here). Existing roles are never
altered, and nothing is dropped. Tablespaces are left alone (paths of another machine).

`account_facts` lists, per database, what the grants look like: owners and ACL entries of
schemas, tables, views and sequences, default privileges, row-level security and policies;
`role_facts` the roles and memberships of the server. The backup stores both in the
manifest (no password hashes), the restore computes them again on the target and names what
is missing (`missing_facts`): the "roles and grants came along" check of restores and drills.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

Fact = tuple[str, ...]

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE = re.compile(rf"^CREATE ROLE ({_IDENT});$", re.DOTALL)
_ALTER_WITH = re.compile(rf"^ALTER ROLE ({_IDENT}) WITH (.*);$", re.DOTALL)
_ALTER_SET = re.compile(rf"^ALTER ROLE ({_IDENT}) SET .*;$", re.DOTALL)
_COMMENT = re.compile(rf"^COMMENT ON ROLE ({_IDENT}) IS .*;$", re.DOTALL)
_MEMBER = re.compile(rf"^GRANT ({_IDENT}) TO ({_IDENT})(.*?)(?: GRANTED BY {_IDENT})?;$", re.DOTALL)


def unquote_identifier(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, `--` comments removed; quotes respected."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(script):
        char = script[i]
        if quote is None and script.startswith("--", i):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end + 1
            continue
        current.append(char)
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
        i += 1
    rest = "".join(current).strip()
    if rest:
        statements.append(rest)
    return statements


@dataclass
class RoleScript:
    """What globals.sql says about one role."""

    name: str
    options: str = ""  # the attribute list of `ALTER ROLE name WITH ...`
    settings: list[str] = field(default_factory=list)  # ALTER ROLE ... SET / COMMENT ON ROLE
    member_of: list[tuple[str, str]] = field(default_factory=list)  # (group, "GRANT ...;")


def parse_globals(script: str) -> dict[str, RoleScript]:
    """The roles of a `pg_dumpall --globals-only` script, in the order it creates them."""
    roles: dict[str, RoleScript] = {}

    def role(quoted: str) -> RoleScript:
        name = unquote_identifier(quoted)
        return roles.setdefault(name, RoleScript(name))

    for statement in split_statements(script):
        if match := _CREATE.match(statement):
            role(match.group(1))
        elif match := _ALTER_WITH.match(statement):
            role(match.group(1)).options = match.group(2)
        elif (match := _ALTER_SET.match(statement)) or (match := _COMMENT.match(statement)):
            role(match.group(1)).settings.append(statement)
        elif match := _MEMBER.match(statement):
            group, member, rest = match.groups()
            grant = f"GRANT {group} TO {member}{rest};"
            role(member).member_of.append((unquote_identifier(group), grant))
    return roles


@dataclass
class ReplayOutcome:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "role x: <error>", for warnings


def existing_roles(conn: psycopg.Connection[tuple[Any, ...]]) -> set[str]:
    return {str(row[0]) for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


def replay_roles(
    conn: psycopg.Connection[tuple[Any, ...]], roles: dict[str, RoleScript]
) -> ReplayOutcome:
    """Create the roles of `roles` that the server of `conn` (autocommit) lacks; see the
    module docstring. A statement that fails is a problem of that role, not an exception."""
    outcome = ReplayOutcome()
    present = existing_roles(conn)
    for role in roles.values():
        if role.name in present:
            outcome.existing.append(role.name)
            continue
        quoted = _quote(conn, role.name)
        statement = f"CREATE ROLE {quoted}" + (f" WITH {role.options}" if role.options else "")
        if _run(conn, statement, f"role {role.name}", outcome):
            outcome.created.append(role.name)
            for setting in role.settings:
                _run(conn, setting, f"role {role.name}", outcome)
    created = set(outcome.created)
    for role in roles.values():
        if role.name in created:
            for group, grant in role.member_of:
                _run(conn, grant, f"membership of {role.name} in {group}", outcome)
    return outcome


def _quote(conn: psycopg.Connection[tuple[Any, ...]], name: str) -> str:
    return psycopg.sql.Identifier(name).as_string(conn)


def _run(
    conn: psycopg.Connection[tuple[Any, ...]], statement: str, what: str, outcome: ReplayOutcome
) -> bool:
    try:
        conn.execute(statement.encode())
    except psycopg.Error as err:
        outcome.problems.append(f"{what}: {str(err).strip().splitlines()[0]}")
        return False
    return True


# ----- facts: what the grants look like ------------------------------------------------------

_OBJECTS_SQL = r"""
WITH objects AS (
  SELECT 'schema' AS kind, quote_ident(n.nspname) AS name, n.nspowner AS owner,
         n.nspacl AS acl, false AS rls
  FROM pg_namespace n
  WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
              WHEN 'm' THEN 'view' ELSE 'table' END,
         quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relowner, c.relacl,
         c.relrowsecurity
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
)
SELECT o.kind, o.name, pg_get_userbyid(o.owner), o.rls,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
FROM objects o LEFT JOIN LATERAL aclexplode(o.acl) a ON true
"""

_DEFAULT_ACL_SQL = """
SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
     LATERAL aclexplode(d.defaclacl) a
"""

_POLICIES_SQL = """
SELECT quote_ident(schemaname) || '.' || quote_ident(tablename), policyname, permissive, cmd,
       array_to_string(roles, ','), coalesce(qual, ''), coalesce(with_check, '')
FROM pg_policies
"""

_ROLES_SQL = r"""
SELECT 'role', rolname, '' FROM pg_roles WHERE rolname !~ '^pg_'
UNION ALL
SELECT 'member', m.rolname, g.rolname
FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.member JOIN pg_roles g ON g.oid = am.roleid
WHERE m.rolname !~ '^pg_' AND g.rolname !~ '^pg_'
"""


def account_facts(conn: psycopg.Connection[tuple[Any, ...]]) -> list[Fact]:
    """Owners, grants, default privileges, RLS and policies of the database of `conn`."""
    facts: set[Fact] = set()
    for kind, name, owner, rls, grantee, privilege, grantable in conn.execute(
        _OBJECTS_SQL
    ).fetchall():
        facts.add(("owner", kind, name, owner))
        if rls:
            facts.add(("rls", kind, name))
        if privilege is not None:
            facts.add(("grant", kind, name, grantee, privilege, "grantable" if grantable else ""))
    for role, schema, objtype, grantee, privilege in conn.execute(_DEFAULT_ACL_SQL).fetchall():
        facts.add(("default", role, schema, objtype, grantee, privilege))
    for row in conn.execute(_POLICIES_SQL).fetchall():
        facts.add(("policy", *(str(value) for value in row)))
    return sorted(facts)


def role_facts(conn: psycopg.Connection[tuple[Any, ...]]) -> list[Fact]:
    """The roles (except pg_*) and memberships of the server of `conn`."""
    rows = conn.execute(_ROLES_SQL).fetchall()
    return sorted({tuple(str(v) for v in row if v != "") for row in rows})


def without_owners(facts: list[Fact]) -> list[Fact]:
    """The facts a `--no-owner` restore keeps: no owners, no grants of an owner to itself."""
    owners = {(f[1], f[2]): f[3] for f in facts if f[0] == "owner"}
    return [
        f for f in facts
        if f[0] != "owner" and not (f[0] == "grant" and owners.get((f[1], f[2])) == f[3])
    ]  # fmt: skip


def missing_facts(recorded: list[Fact], present: list[Fact]) -> list[Fact]:
    have = set(present)
    return [fact for fact in recorded if fact not in have]


def describe_fact(fact: Fact) -> str:
    """One fact in words, for a warning or a drill check."""
    kind = fact[0]
    if kind == "owner":
        return f"{fact[1]} {fact[2]} owned by {fact[3]}"
    if kind == "grant":
        option = " WITH GRANT OPTION" if fact[5] else ""
        return f"GRANT {fact[4]} ON {fact[1]} {fact[2]} TO {fact[3]}{option}"
    if kind == "rls":
        return f"row-level security on {fact[1]} {fact[2]}"
    if kind == "default":
        where = f" IN SCHEMA {fact[2]}" if fact[2] else ""
        objects = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
        return (
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {fact[1]}{where} GRANT {fact[5]} ON "
            f"{objects.get(fact[3], fact[3])} TO {fact[4]}"
        )
    if kind == "policy":
        return f"policy {fact[2]} on {fact[1]} ({fact[4]}, to {fact[5]})"
    if kind == "role":
        return f"role {fact[1]}"
    if kind == "member":
        return f"membership of role {fact[1]} in {fact[2]}"
    return " ".join(fact)
