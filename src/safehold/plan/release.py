"""The plan's `[release]` table: the release ledger, the rollback command and the signals the
release watch polls in the minutes after a deploy."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safehold.plan.fields import Duration, problem

MIGRATION_FRAMEWORKS = ("auto", "django", "alembic", "rails", "prisma", "flyway", "knex", "none")
Framework = Literal["auto", "django", "alembic", "rails", "prisma", "flyway", "knex", "none"]
PLACEHOLDERS = ("{release}", "{git_sha}", "{snapshot}", "{previous}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class _SignalBase(_Model):
    name: str | None = Field(None, description="a short name shown in alerts, like checkout")


class HTTPSignal(_SignalBase):
    """Good while GET url answers with `status`."""

    type: Literal["http"]
    url: str = Field(description="a URL like https://app.example.com/health")
    status: int = Field(200, ge=100, le=599, description="the HTTP status a healthy app answers")
    timeout: Duration = Field(timedelta(seconds=10), description="a duration like 10s")


class _ThresholdSignal(_SignalBase):
    min: float | None = Field(None, description="the value must stay at or above this")
    max: float | None = Field(None, description="the value must stay at or below this")


class SQLSignal(_ThresholdSignal):
    """Good while the query's single value stays within min/max (e.g. signups per minute)."""

    type: Literal["sql"]
    source: str | None = Field(None, description="the database source (default: the release's)")
    query: str = Field(description="a query returning one number, like SELECT count(*) ...")

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if self.min is None and self.max is None:
            raise problem("min or max for a sql signal", hint="add max = 5 or min = 1")
        return self


class CommandSignal(_ThresholdSignal):
    """Good while the command exits 0 (and, with min/max, prints a number within them)."""

    type: Literal["command"]
    command: str = Field(description="a command line, like ./bin/error-rate")
    timeout: Duration = Field(timedelta(seconds=30), description="a duration like 30s")


Signal = Annotated[HTTPSignal | SQLSignal | CommandSignal, Field(discriminator="type")]


class ReleaseConfig(_Model):
    source: str | None = Field(
        None, description="the database source whose migrations are tracked (default: the first)"
    )
    database: str | None = Field(
        None, description="the database of that source (default: its first)"
    )
    keep: int = Field(5, ge=1, le=100, description="how many releases keep their snapshot held")
    migrations: Framework = Field(
        "auto", description="the migration framework: " + ", ".join(MIGRATION_FRAMEWORKS)
    )
    migrations_query: str | None = Field(
        None, description="a query returning one applied migration per row (overrides migrations)"
    )
    rollback_command: str | None = Field(
        None, description='a command like "git checkout {git_sha} && ./deploy"'
    )
    watch_for: Duration = Field(timedelta(minutes=10), description="a duration like 10m")
    watch_every: Duration = Field(timedelta(seconds=15), description="a duration like 15s")
    signals: list[Signal] = Field(
        default_factory=list, description="a list of [[release.signals]] tables"
    )

    @model_validator(mode="after")
    def _known_placeholders(self) -> Self:
        command = self.rollback_command or ""
        for part in command.split("{")[1:]:
            name = "{" + part.split("}")[0] + "}"
            if name not in PLACEHOLDERS:
                raise problem(
                    "placeholders " + ", ".join(PLACEHOLDERS),
                    found=name,
                    hint="rollback_command may use " + ", ".join(PLACEHOLDERS),
                )
        return self
