"""SQLite for the row diff: the restored snapshot copy is the main database (work tables go
there too), the live file is ATTACHed as `live` (read-only for a diff), so every comparison
is one SQL statement in one engine. Row hashes come from a registered function."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from safehold.sources.rowdiff import WORK_PREFIX, RowDiffError, RowEngine, TableInfo


def _row_hash(*values: Any) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for value in values:
        if value is None:
            digest.update(b"N|")
            continue
        if isinstance(value, bytes):
            raw, tag = value, b"B"
        else:
            raw = str(value).encode("utf-8", "surrogatepass")
            tag = type(value).__name__[:1].encode()
        digest.update(tag + str(len(raw)).encode() + b":" + raw + b"|")
    return digest.hexdigest()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def catalog(conn: sqlite3.Connection, schema: str) -> dict[str, TableInfo]:
    s = _q(schema)
    names = [
        str(r[0])
        for r in conn.execute(
            f"SELECT name FROM {s}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            f"AND name NOT LIKE '{WORK_PREFIX}%' ORDER BY name"
        )
    ]
    has_sequence = bool(
        conn.execute(f"SELECT 1 FROM {s}.sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    )
    sequenced = (
        {str(r[0]) for r in conn.execute(f"SELECT name FROM {s}.sqlite_sequence")}
        if has_sequence
        else set()
    )
    found: dict[str, TableInfo] = {}
    for name in names:
        info = conn.execute(f"PRAGMA {s}.table_xinfo({_q(name)})").fetchall()
        # (cid, name, type, notnull, default, pk, hidden): hidden 2/3 are generated columns
        columns = [row for row in info if int(row[6]) in (0,)]
        pk = tuple(str(r[1]) for r in sorted((r for r in columns if r[5]), key=lambda r: r[5]))
        uniques: list[tuple[str, ...]] = []
        for index in conn.execute(f"PRAGMA {s}.index_list({_q(name)})").fetchall():
            # (seq, name, unique, origin, partial)
            if int(index[2]) and str(index[3]) != "pk" and not int(index[4]):
                cols = conn.execute(f"PRAGMA {s}.index_info({_q(str(index[1]))})").fetchall()
                if all(c[2] is not None for c in cols):  # no expression columns
                    uniques.append(tuple(str(c[2]) for c in cols))
        parents = {str(r[2]) for r in conn.execute(f"PRAGMA {s}.foreign_key_list({_q(name)})")}
        serials = pk if name in sequenced and len(pk) == 1 else ()
        found[name] = TableInfo(
            name,
            f"{s}.{_q(name)}",
            tuple(str(r[1]) for r in columns),
            tuple(str(r[2]) for r in columns),
            pk,
            tuple(uniques),
            tuple(sorted(parents)),
            serials,
        )
    return found


def open_file(path: Path) -> sqlite3.Connection:
    """A SQLite file (a snapshot copy) in autocommit mode, with the row hash function."""
    try:
        conn = sqlite3.connect(str(path), uri=True, isolation_level=None, check_same_thread=False)
        conn.create_function("safehold_hash", -1, _row_hash, deterministic=True)
    except sqlite3.Error as err:
        raise RowDiffError(f"cannot open {path}: {err}") from None
    return conn


class SqliteRowEngine(RowEngine):
    kind = "sqlite"
    param = "?"

    def __init__(self, snapshot_copy: Path, live: Path, *, writable: bool = False) -> None:
        if not live.is_file():
            raise RowDiffError(
                f"the live database {live} is not a file", hint="check the sqlite path in the plan"
            )
        conn = open_file(snapshot_copy)
        try:
            mode = "rw" if writable else "ro"
            conn.execute("ATTACH DATABASE ? AS live", (f"file:{quote(str(live))}?mode={mode}",))
        except sqlite3.Error as err:
            raise RowDiffError(f"cannot open {live} next to the snapshot copy: {err}") from None
        conn.execute("PRAGMA busy_timeout = 30000")
        self.work = conn
        self.live = conn

    def quote(self, name: str) -> str:
        return _q(name)

    def work_ref(self, name: str) -> str:
        return f"main.{_q(name)}"

    def index_work(self, name: str, columns: Sequence[str]) -> None:
        cols = ", ".join(_q(c) for c in columns)
        self.work_sql(f"CREATE INDEX main.{_q(name + '_i')} ON {_q(name)} ({cols})")

    def hash_expr(self, alias: str, columns: Sequence[str], *, multiset: bool = False) -> str:
        return f"safehold_hash({', '.join(f'{alias}.{_q(c)}' for c in columns)})"

    def distinct(self, left: str, right: str) -> str:
        return f"{left} IS NOT {right}"

    def snapshot_tables(self) -> dict[str, TableInfo]:
        return catalog(self.work, "main")

    def live_tables(self) -> dict[str, TableInfo]:
        return catalog(self.work, "live")

    def pull(self, select: str, into: str, width: int) -> None:
        self.work_sql(f"INSERT INTO {self.work_ref(into)} {select}")

    def begin_live(self) -> None:
        self.work.execute("BEGIN IMMEDIATE")

    def commit_live(self) -> None:
        self.work.execute("COMMIT")

    def rollback_live(self) -> None:
        if self.work.in_transaction:
            self.work.execute("ROLLBACK")

    def fix_sequences(self, table: TableInfo, dry_run: bool) -> list[str]:
        done: list[str] = []
        for column in table.serials:
            statement = (
                f"UPDATE live.sqlite_sequence SET seq = (SELECT max({_q(column)}) FROM "
                f"{table.ref}) WHERE name = '{table.name}'"
            )
            if dry_run:
                done.append(f"{statement}  -- when it is behind")
                continue
            top = self.work.execute(f"SELECT max({_q(column)}) FROM {table.ref}").fetchone()
            seq = self.work.execute(
                "SELECT seq FROM live.sqlite_sequence WHERE name = ?", (table.name,)
            ).fetchone()
            if not top or top[0] is None:
                continue
            if seq is not None and int(seq[0]) >= int(top[0]):
                done.append(f"{table.name}.{column}: sequence already past {top[0]} (at {seq[0]})")
                continue
            self.work.execute(
                "UPDATE live.sqlite_sequence SET seq = ? WHERE name = ?", (int(top[0]), table.name)
            )
            done.append(f"{table.name}.{column}: sequence moved to {top[0]}")
        return done

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.work.close()
