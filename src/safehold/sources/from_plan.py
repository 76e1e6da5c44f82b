"""From the plan's `[[sources]]` tables to `Source` objects: the one map from config to code."""

from __future__ import annotations

from pathlib import Path

from safehold.plan.models import (
    AnySource,
    BucketConfig,
    CommandConfig,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SQLiteConfig,
)
from safehold.sources.base import Source
from safehold.sources.bucket import BucketAccess, BucketSource
from safehold.sources.command import CommandSource
from safehold.sources.files import FilesSource
from safehold.sources.sqlite import SqliteSource


def build_source(config: AnySource, plan: Plan) -> Source:
    redact = plan.redactor()
    if isinstance(config, PostgresConfig):
        from safehold.sources.postgres import PostgresSource  # psycopg loads only when used

        return PostgresSource(
            config.name, config.url, config.database_names() or None, config.globals, config.jobs
        )
    if isinstance(config, MySQLConfig):
        from safehold.sources.mysql import MysqlSource

        return MysqlSource(config.name, config.url, config.database_names() or None)
    if isinstance(config, SQLiteConfig):
        return SqliteSource(config.name, Path(config.path))
    if isinstance(config, FilesConfig):
        return FilesSource(config.name, [Path(p) for p in config.paths], config.exclude)
    if isinstance(config, BucketConfig):
        access = BucketAccess.parse(
            config.url, access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key, profile=config.profile,
            region=config.region, endpoint=config.endpoint,
        )  # fmt: skip
        return BucketSource(config.name, access, excludes=config.exclude, workers=config.workers)
    assert isinstance(config, CommandConfig)
    return CommandSource(
        config.name,
        config.command,
        filename=config.output_name,
        cwd=config.cwd,
        timeout=config.timeout.total_seconds(),
        notes=config.notes or "",
        redact=redact,
    )


def build_sources(plan: Plan, names: list[str] | None = None) -> list[Source]:
    chosen = [plan.source(name) for name in names] if names else list(plan.sources)
    return [build_source(config, plan) for config in chosen]
