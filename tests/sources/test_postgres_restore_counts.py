"""PostgreSQL restores count rows while pg_restore runs (each table as soon as its data item
is done) and read the dump out of the repository on several threads; the counts stay exact
and a mismatch still fails the verification."""

from __future__ import annotations

import copy
import io
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from safehold.errors import MissingObjectError
from safehold.repo.dump import dump_file
from safehold.repo.repository import Repository
from safehold.repo.walk import find_node
from safehold.sources import postgres
from safehold.sources.dbtools import RestoreVerificationError, require_verified
from safehold.sources.postgres import PostgresSource
from tests.servers import PostgresServer
from tests.sources.conftest import backup

PLAIN = ("public.accounts", "public.events", "app.notes")


@pytest.fixture
def new_db(postgres_server: PostgresServer) -> Iterator[Any]:
    names: list[str] = []

    def make(prefix: str, create: bool = True) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        if create:
            postgres_server.create_database(name)
        return name

    yield make
    for name in names:
        postgres_server.drop_database(name)


def _fill(server: PostgresServer, db: str) -> None:
    """Plain tables (one of them several MB: a dump of several blobs), a partitioned table
    and an inheritance parent with a child: the last two can only be counted at the end."""
    server.psql(
        """
        CREATE SCHEMA app;
        CREATE TABLE accounts (id int PRIMARY KEY, name text);
        INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 3000) g;
        CREATE TABLE events (id bigint PRIMARY KEY, account int REFERENCES accounts(id),
                             payload text);
        INSERT INTO events SELECT g, 1 + g % 3000, md5(g::text) || repeat(md5((g*7)::text), 8)
          FROM generate_series(1, 40000) g;
        CREATE INDEX events_account ON events (account);
        CREATE TABLE app.notes (body text);
        INSERT INTO app.notes SELECT 'note ' || g FROM generate_series(1, 77) g;
        CREATE TABLE measures (at date NOT NULL, v int) PARTITION BY RANGE (at);
        CREATE TABLE measures_2025 PARTITION OF measures
          FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE measures_2026 PARTITION OF measures
          FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        INSERT INTO measures SELECT DATE '2025-06-01' + (g % 400), g
          FROM generate_series(1, 900) g;
        CREATE TABLE animals (name text);
        CREATE TABLE cats (lives int) INHERITS (animals);
        INSERT INTO animals VALUES ('dog'), ('cow');
        INSERT INTO cats VALUES ('tom', 9), ('felix', 7), ('garfield', 1);
        """,
        db,
    )


def test_rows_are_counted_while_the_restore_runs_and_match(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    db = new_db("counted")
    _fill(postgres_server, db)
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False, jobs=3)
    snapshot, manifest = backup(repo, source)
    expected = manifest["databases"][db]["tables"]
    assert expected["public.measures"] == 900 and expected["public.animals"] == 5

    target = new_db("counted_restored", create=False)
    report = require_verified(source.restore(repo, snapshot, manifest, postgres_server.url(target)))
    assert report.details["verified"] is True
    # every plain table was counted as soon as its data was in, the others at the end
    assert report.details["counted_during_restore"][target] == len(PLAIN)
    databases = report.details["databases"][target]
    assert databases["rows"] == sum(expected.values())
    assert "public.events: 40,000 rows (matches backup)" in report.summary
    assert "public.measures: 900 rows (matches backup)" in report.summary
    assert "public.animals: 5 rows (matches backup)" in report.summary
    assert "public.cats: 3 rows (matches backup)" in report.summary
    for table, rows in expected.items():
        schema, name = table.split(".")
        assert postgres_server.psql(f'SELECT count(*) FROM "{schema}"."{name}"', target) == (
            f"{rows}\n"
        )


def test_a_count_that_does_not_match_still_fails_the_restore(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    db = new_db("mismatch")
    _fill(postgres_server, db)
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False, jobs=3)
    snapshot, manifest = backup(repo, source)
    wrong = copy.deepcopy(manifest)
    tables = wrong["databases"][db]["tables"]
    tables["public.events"] += 1  # a table counted during the restore
    tables["public.cats"] -= 1  # and one counted at the end
    target = new_db("mismatch_restored", create=False)
    report = source.restore(repo, snapshot, wrong, postgres_server.url(target))
    assert report.details["verified"] is False
    assert report.details["counted_during_restore"][target] == len(PLAIN)
    warnings = " ".join(report.warnings)
    assert "public.events" in warnings and "public.cats" in warnings
    with pytest.raises(RestoreVerificationError):
        require_verified(report)


def test_a_dump_read_on_several_threads_is_the_same_file(
    postgres_server: PostgresServer, repo: Repository, new_db: Any
) -> None:
    db = new_db("threads")
    _fill(postgres_server, db)
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
    snapshot, manifest = backup(repo, source)
    path = f"/pg/{db}.pgdump"
    node, _ = find_node(repo, snapshot.tree, path)
    assert node is not None and len(node.content or []) > 2  # several blobs
    one, three = io.BytesIO(), io.BytesIO()
    assert dump_file(repo, snapshot, path, one) == manifest["databases"][db]["size"]
    assert dump_file(repo, snapshot, path, three, workers=3) == len(one.getvalue())
    assert three.getvalue() == one.getvalue()


def test_staged_dumps_are_restored_without_reading_the_repository_again(
    postgres_server: PostgresServer,
    repo: Repository,
    new_db: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    db = new_db("staged")
    _fill(postgres_server, db)
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
    snapshot, manifest = backup(repo, source)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with source.staged(repo, snapshot, manifest):
        staged = list(temp.glob("safehold-pg-*.pgdump"))
        assert len(staged) == 1 and staged[0].stat().st_size == manifest["databases"][db]["size"]

        def no_reading(*_args: Any, **_kwargs: Any) -> int:
            raise AssertionError("the staged dump was read again")

        monkeypatch.setattr(postgres, "dump_file", no_reading)
        target = new_db("staged_restored", create=False)
        report = require_verified(
            source.restore(repo, snapshot, manifest, postgres_server.url(target))
        )
        assert report.details["verified"] is True
    assert list(temp.iterdir()) == []  # the staged dump is gone with the block


def test_a_staging_that_fails_leaves_no_temp_file(
    postgres_server: PostgresServer,
    repo: Repository,
    new_db: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    db = new_db("staging_fails")
    _fill(postgres_server, db)
    source = PostgresSource("pg", postgres_server.url(db), include_globals=False)
    snapshot, manifest = backup(repo, source)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    def broken(_repo: Any, _snapshot: Any, _path: str, out: Any, **_kwargs: Any) -> int:
        out.write(b"PGDMP partial")
        raise MissingObjectError("blob 1234abcd is not in the index")

    monkeypatch.setattr(postgres, "dump_file", broken)
    with pytest.raises(MissingObjectError), source.staged(repo, snapshot, manifest):
        pass
    assert list(temp.iterdir()) == []
