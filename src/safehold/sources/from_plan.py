"""From the plan's `[[sources]]` tables to `Source` objects: the one map from config to code.

The map reads each table's `type` (the tag of the `AnySource` union), not the model classes:
a caller always hands over a plan already loaded, and this module stays importable without
pydantic (the app layer imports it for every backup and restore, with a plan or not). Each
kind's module loads when a plan names one (a `-r` backup loads none but files')."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from safehold.sources.base import Source
from safehold.sources.files import FilesSource

if TYPE_CHECKING:
    from safehold.plan.models import AnySource, Plan


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
    if config.type == "postgres":
        from safehold.sources.postgres import PostgresSource  # psycopg loads only when used

        return PostgresSource(
            config.name, config.url, config.database_names() or None, config.globals, config.jobs
        )
    if config.type == "mysql":
        from safehold.sources.mysql import MysqlSource

        return MysqlSource(config.name, config.url, config.database_names() or None)
    if config.type == "sqlite":
        from safehold.sources.sqlite import SqliteSource  # sqlite3 loads only when used

        return SqliteSource(config.name, Path(config.path))
    if config.type == "files":
        return FilesSource(config.name, [Path(p) for p in config.paths], config.exclude)
    if config.type == "bucket":
        from safehold.sources.bucket import BucketAccess, BucketSource  # the S3 client code

        access = BucketAccess.parse(
            config.url, access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key, profile=config.profile,
            region=config.region, endpoint=config.endpoint,
        )  # fmt: skip
        return BucketSource(config.name, access, excludes=config.exclude, workers=config.workers)
    if config.type == "secrets":
        from safehold.sources.secrets import SecretsSource  # pyrage loads only when used

        return SecretsSource(
            config.name, config.base_dir, config.files, config.env, config.recipients,
            identity=identity, identity_command=config.identity_command, environ=environ,
            redact=redact,
        )  # fmt: skip
    assert config.type == "command"
    from safehold.sources.command import CommandSource

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
