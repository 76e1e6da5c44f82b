"""From the plan's `[[sources]]` tables to `Source` objects: the one map from config to code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from safehold.plan.models import (
    AnySource,
    BucketConfig,
    CommandConfig,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SecretsConfig,
    SQLiteConfig,
)
from safehold.sources.base import Source
from safehold.sources.bucket import BucketAccess, BucketSource
from safehold.sources.command import CommandSource
from safehold.sources.files import FilesSource
from safehold.sources.secrets import SecretsSource
from safehold.sources.sqlite import SqliteSource


def build_source(
    config: AnySource,
    plan: Plan,
    *,
    identity: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Source:
    """The source for one `[[sources]]` table. `identity` (an age identity file) and `environ`
    (variables a secrets source backs up, and its SAFEHOLD_AGE_IDENTITY_FILE) matter only to
    secrets sources."""
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
    if isinstance(config, SecretsConfig):
        return SecretsSource(
            config.name, config.base_dir, config.files, config.env, config.recipients,
            identity=identity, identity_command=config.identity_command, environ=environ,
            redact=redact,
        )  # fmt: skip
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


def build_sources(
    plan: Plan, names: list[str] | None = None, environ: Mapping[str, str] = os.environ
) -> list[Source]:
    chosen = [plan.source(name) for name in names] if names else list(plan.sources)
    return [build_source(config, plan, environ=environ) for config in chosen]
