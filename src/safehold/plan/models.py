"""The plan file `safehold.toml` as pydantic models: unknown keys are errors, sources are a
union discriminated on `type`, relative paths are resolved against the plan's folder.

Validate with `Plan.model_validate(data, context={"base_dir": folder, "home": home})`; the
loader (`safehold.plan.loader.load_plan`) does that and turns errors into one-line PlanErrors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from safehold.backends.s3 import parse_s3_location
from safehold.errors import UsageError
from safehold.plan.fields import (
    AgeRecipient,
    AppName,
    DatabaseName,
    DestinationName,
    DestinationType,
    Duration,
    EnvName,
    EnvVar,
    FileName,
    PasswordFile,
    PitrMode,
    PlanPath,
    RemoteURL,
    Repository,
    SecretPattern,
    SourceName,
    SQLitePath,
    Text,
    nonempty_list,
    problem,
    url_checker,
)
from safehold.plan.interpolate import Substitution
from safehold.plan.operations import (
    AlertsConfig,
    MetricsConfig,
    PingsConfig,
    ScheduleConfig,
    add_secret_url,
)
from safehold.plan.redact import Redactor
from safehold.plan.release import ReleaseConfig, SQLSignal
from safehold.policy.duration import parse_duration
from safehold.redaction import mask_location, redact_url

DEFAULT_PASSWORD_ENV = "SAFEHOLD_PASSWORD"
SOURCE_TYPES = ("postgres", "mysql", "sqlite", "files", "command", "bucket", "secrets")
PASSWORD_KEYS = ("password_env", "password_file", "password_command")


class PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


PostgresURL = Annotated[
    str,
    BeforeValidator(
        url_checker(
            ("postgresql", "postgres"),
            "a postgresql:// or postgres:// URL",
            "postgresql://app:${DB_PASSWORD}@db.internal:5432/app",
        )
    ),
    Field(description="a postgresql:// or postgres:// URL"),
]
MySQLURL = Annotated[
    str,
    BeforeValidator(
        url_checker(
            ("mysql", "mariadb"),
            "a mysql:// or mariadb:// URL",
            "mysql://app:${DB_PASSWORD}@db.internal:3306/app",
        )
    ),
    Field(description="a mysql:// or mariadb:// URL"),
]
DatabaseNames = Annotated[
    list[DatabaseName],
    Field(description='a list of database names, like ["shop"]'),
]


class SourceBase(PlanModel):
    """What every source has: a unique name, and who to call when it breaks."""

    name: SourceName
    owner: Text | None = Field(None, description="who can log in and fix it, like alice")
    credentials_at: Text | None = Field(
        None, description="where the credentials live (never the secret itself)"
    )
    notes: Text | None = Field(None, description="notes for the restore runbook")
    rpo: Duration | None = Field(
        None, description="this source's RPO, like 1h (default: targets.rpo)"
    )

    def location(self) -> str:
        """Where the data lives, safe to print (passwords redacted)."""
        raise NotImplementedError


def _url_database(url: str) -> str | None:
    """The database a URL names, read from the URL as it may be shown (a malformed one's
    password never ends up in a database name)."""
    try:
        path = urlsplit(redact_url(url)).path
    except ValueError:
        return None
    name = unquote(path.lstrip("/"))
    return name or None


class _DatabaseSource(SourceBase):
    url: str
    databases: DatabaseNames = Field(default_factory=list)

    def database_names(self) -> list[str]:
        """The databases to back up: `databases`, or the one named in the URL."""
        if self.databases:
            return list(self.databases)
        named = _url_database(self.url)
        return [named] if named else []

    def location(self) -> str:
        return mask_location(self.url)


class PostgresConfig(_DatabaseSource):
    type: Literal["postgres"]
    url: PostgresURL
    globals: bool = Field(True, description="true or false")
    jobs: int = Field(4, ge=1, le=64, description="a whole number from 1 to 64")
    pitr: PitrMode | None = Field(
        None, description='point-in-time recovery: "wal" or "provider:7d" (README "Point-in-time")'
    )
    wal: Literal["archive", "stream"] = Field(
        "archive",
        description='how WAL reaches the repository: "archive" (archive_command = safehold '
        'wal-push) or "stream" (safehold wal-stream, a replication slot; README "WAL streaming")',
    )
    wal_spool: str | None = Field(
        None,
        description="the spool folder of wal-stream (default /var/lib/safehold/wal-stream/NAME)",
    )
    wal_slot: str = Field(
        "safehold", pattern=r"^[a-z0-9_]{1,63}$", description="the replication slot of wal-stream"
    )

    @property
    def pitr_wal(self) -> bool:
        """Whether safehold archives this server's WAL (`pitr = "wal"`)."""
        return self.pitr == "wal"

    @property
    def provider_pitr_window(self) -> timedelta | None:
        """The provider's PITR window (`pitr = "provider:7d"`), or None."""
        if not self.pitr or not self.pitr.startswith("provider:"):
            return None
        return parse_duration(self.pitr.removeprefix("provider:"))


class MySQLConfig(_DatabaseSource):
    type: Literal["mysql"]
    url: MySQLURL


class SQLiteConfig(SourceBase):
    type: Literal["sqlite"]
    path: SQLitePath

    def location(self) -> str:
        return str(self.path)


class FilesConfig(SourceBase):
    type: Literal["files"]
    paths: Annotated[
        list[PlanPath],
        AfterValidator(nonempty_list("at least one path")),
        Field(description='a list of folders or files, like ["uploads"]'),
    ]
    exclude: list[str] = Field(
        default_factory=list, description='a list of patterns to skip, like ["*.tmp"]'
    )

    def location(self) -> str:
        return ", ".join(str(path) for path in self.paths)


class CommandConfig(SourceBase):
    type: Literal["command"]
    command: Text = Field(description="the command line whose output is the backup")
    filename: FileName | None = Field(None, description="a plain file name like billing.json")
    timeout: Duration = Field(timedelta(hours=1), description="a duration like 10m or 1h")
    _cwd: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> Self:
        if self.filename is None:
            self.filename = f"{self.name}.out"
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        self._cwd = Path(base) if base is not None else None
        return self

    @property
    def output_name(self) -> str:
        """The name of the file that stores the command's standard output."""
        return self.filename or f"{self.name}.out"

    @property
    def cwd(self) -> Path:
        """The folder the command runs in: the plan's folder."""
        return self._cwd if self._cwd is not None else Path.cwd()

    def location(self) -> str:
        return f"`{self.command}`"


def _bucket_url(value: Any) -> str:
    expected = 'an s3: location like "s3:https://s3.example.net/uploads/prefix"'
    if not isinstance(value, str) or not value.startswith("s3:"):
        raise problem(expected)
    try:
        parse_s3_location(value)
    except UsageError as err:
        raise problem(expected, hint=err.hint or err.message) from None
    return value


BucketURL = Annotated[
    str,
    BeforeValidator(_bucket_url),
    Field(description='an s3: location like "s3:https://s3.example.net/uploads/prefix"'),
]


def _check_s3_login(
    access_key_id: str | None,
    secret_access_key: str | None,
    profile: str | None,
    endpoint: str | None,
) -> None:
    """An S3 login of its own: both keys or neither, keys or a profile, an http(s) endpoint.
    The same rule for bucket sources and S3 destinations."""
    if (access_key_id is None) != (secret_access_key is None):
        absent = "access_key_id" if access_key_id is None else "secret_access_key"
        raise problem(
            "access_key_id and secret_access_key together",
            found=f"no {absent}",
            hint=f"add {absent} (or remove both and use profile or the AWS_* variables)",
        )
    if profile is not None and access_key_id is not None:
        raise problem(
            "either keys or a profile", found="both", hint="keep the one this machine uses"
        )
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise problem(
            "an endpoint URL starting with http:// or https://",
            found=f'"{endpoint}"',
            hint='write endpoint = "https://HOST[:PORT]"',
            at=("endpoint",),
        )


class BucketConfig(SourceBase):
    """An S3-compatible bucket (or a prefix of one), with its own credentials: the keys (or a
    profile) given here, else the process's AWS_* variables."""

    type: Literal["bucket"]
    url: BucketURL
    access_key_id: Text | None = Field(None, description="an access key id, like ${UPLOADS_KEY}")
    secret_access_key: Text | None = Field(
        None, description="a secret access key, like ${UPLOADS_SECRET}"
    )
    profile: Text | None = Field(None, description="an AWS profile name from ~/.aws")
    region: Text | None = Field(None, description="a region like eu-central-1")
    endpoint: Text | None = Field(
        None, description="an endpoint URL like https://s3.example.net (default: the url's)"
    )
    exclude: list[str] = Field(
        default_factory=list, description='a list of key patterns to skip, like ["tmp/*"]'
    )
    workers: int = Field(8, ge=1, le=64, description="a whole number from 1 to 64")

    @model_validator(mode="after")
    def _one_credential_source(self) -> Self:
        _check_s3_login(self.access_key_id, self.secret_access_key, self.profile, self.endpoint)
        return self

    def location(self) -> str:
        return self.url


class SecretsConfig(SourceBase):
    """Files and environment variables the app cannot start without, encrypted to age
    `recipients` before they enter the repository: the backing-up host needs only the public
    keys; restores and drills need the identity (`identity_command`, or given at the time)."""

    type: Literal["secrets"]
    files: list[SecretPattern] = Field(
        default_factory=list,
        description='a list of paths relative to the plan folder, like [".env", "certs/*.key"]',
    )
    env: list[EnvVar] = Field(
        default_factory=list, description='a list of environment variable names, like ["API_KEY"]'
    )
    recipients: Annotated[
        list[AgeRecipient],
        AfterValidator(nonempty_list("at least one age public key")),
        Field(description='a list of age public keys, like ["age1…"]'),
    ]
    identity_command: Text | None = Field(
        None, description="a command printing the age identity, like pass show safehold/age"
    )
    _base_dir: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _something_and_base(self, info: ValidationInfo) -> Self:
        if not self.files and not self.env:
            raise problem("files or env to back up", found="neither", hint='add files = [".env"]')
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        self._base_dir = Path(base) if base is not None else None
        return self

    @property
    def base_dir(self) -> Path:
        """The folder `files` are relative to: the plan's folder."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def location(self) -> str:
        names = [*self.files, *(f"${name}" for name in self.env)]
        return f"{self.base_dir}: " + ", ".join(names)


AnySource = (
    PostgresConfig
    | MySQLConfig
    | SQLiteConfig
    | FilesConfig
    | CommandConfig
    | BucketConfig
    | SecretsConfig
)
SourceConfig = Annotated[AnySource, Field(discriminator="type")]


S3_LOGIN_KEYS = ("access_key_id", "secret_access_key", "profile", "region", "endpoint")
SFTP_LOGIN_KEYS = ("identity", "known_hosts")


class LocalDestination(PlanModel):
    """A repository (a local folder, or an s3:/sftp: location) and where its password
    comes from. Local: `repository = "path"`. Remote: `type = "s3"|"sftp"`, `url = "…"`, and
    the destination's own login (plan/logins.py): on s3 `access_key_id`/`secret_access_key`
    (as ${VAR} references) or `profile`, plus `region` and `endpoint`; on sftp `identity` and
    `known_hosts`. Without them, the process-wide AWS_* / SAFEHOLD_SFTP_* variables."""

    name: DestinationName
    type: DestinationType = "local"
    repository: Repository | None = None
    url: RemoteURL | None = None
    copy_after_backup: bool = Field(False, description="true or false")
    object_lock_days: float | None = Field(
        None, gt=0, description="a number of days, like 30 (s3 destinations only)"
    )
    object_lock_mode: Literal["governance", "compliance"] = Field(
        "governance", description="governance or compliance"
    )
    password_env: EnvVar | None = Field(
        None, description="an environment variable name like SAFEHOLD_PASSWORD"
    )
    password_file: PasswordFile | None = None
    password_command: Text | None = Field(None, description="a command that prints the password")
    max_lag: Duration | None = Field(
        None,
        description="how old this destination's newest snapshot may get, like 2d "
        "(default: targets.rpo + 1d for every destination but the first)",
    )
    access_key_id: Text | None = Field(
        None, description="an access key id, like ${OFFSITE_KEY_ID} (s3 destinations only)"
    )
    secret_access_key: Text | None = Field(
        None, description="a secret access key, like ${OFFSITE_SECRET} (s3 destinations only)"
    )
    profile: Text | None = Field(None, description="an AWS profile name from ~/.aws")
    region: Text | None = Field(None, description="a region like eu-central-1")
    endpoint: Text | None = Field(
        None, description="an endpoint URL like https://s3.example.net (default: the url's)"
    )
    identity: PlanPath | None = Field(
        None, description="the path of an SSH private key (sftp destinations only)"
    )
    known_hosts: PlanPath | None = Field(
        None, description="the path of a known_hosts file (sftp destinations only)"
    )
    _password_key_given: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _location_matches_type(self) -> Self:
        if self.type == "local":
            if self.url is not None:
                raise problem(
                    "repository for a local destination",
                    found="url",
                    hint=f'add type = "{self.url.split(":", 1)[0]}" for this url',
                )
            if self.repository is None:
                raise problem(
                    "a repository folder", found="nothing", hint='add repository = "backups"'
                )
        else:
            if self.repository is not None or self.url is None:
                raise problem(
                    f'url = "{self.type}:…" for a {self.type} destination',
                    found="repository" if self.repository is not None else "nothing",
                    hint=f'write url = "{self.type}:…" instead',
                )
            if self.object_lock_days is not None and self.type != "s3":
                raise problem("object_lock_days only on an s3 destination", found=self.type)
            if not self.url.startswith(f"{self.type}:"):
                raise problem(f"a {self.type}: url", found=f'"{self.url.split(":", 1)[0]}:…"')
        return self

    @model_validator(mode="after")
    def _login_matches_type(self) -> Self:
        for keys, kind in ((S3_LOGIN_KEYS, "s3"), (SFTP_LOGIN_KEYS, "sftp")):
            given = [key for key in keys if getattr(self, key) is not None]
            if given and self.type != kind:
                raise problem(
                    f"{given[0]} only on an {kind} destination",
                    found=f'type = "{self.type}"',
                    hint=f"remove {' and '.join(given)}",
                )
        _check_s3_login(self.access_key_id, self.secret_access_key, self.profile, self.endpoint)
        return self

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        given = [key for key in PASSWORD_KEYS if getattr(self, key) is not None]
        if len(given) > 1:
            raise problem(
                "only one of password_env, password_file or password_command",
                found=" and ".join(given),
                hint="keep the one this machine uses and delete the others",
            )
        self._password_key_given = bool(given)
        if not given:
            self.password_env = DEFAULT_PASSWORD_ENV
        return self

    @property
    def password_key_given(self) -> bool:
        """True when the plan names this destination's password source; without one it comes
        from the environment in the same order as for every command."""
        return self._password_key_given

    def location(self) -> str:
        """Where the repository is, as `-r` takes it (no secrets: credentials are elsewhere)."""
        return self.url if self.url is not None else str(self.repository)

    def password_source(self) -> str:
        """Where the repository password comes from, in words (never the password)."""
        if self.password_file is not None:
            return f"the file {self.password_file}"
        if self.password_command is not None:
            return f"the command `{self.password_command}`"
        if not self.password_key_given:
            return (
                f"the environment ({DEFAULT_PASSWORD_ENV}_FILE, {DEFAULT_PASSWORD_ENV}_COMMAND "
                f"or {DEFAULT_PASSWORD_ENV})"
            )
        return f"the environment variable {self.password_env or DEFAULT_PASSWORD_ENV}"


DestinationConfig = LocalDestination


class Owners(PlanModel):
    restore_approvers: list[Text] = Field(
        default_factory=list, description='a list of people, like ["alice@example.com"]'
    )
    contacts: dict[str, Text] = Field(
        default_factory=dict, description='a table of name = "how to reach them"'
    )
    rollback: list[Text] = Field(
        default_factory=list, description='who may run a rollback, like ["alice", "bob"]'
    )


class Targets(PlanModel):
    rpo: Duration = Field(description="a duration like 15m, 1h or 7d")
    rto: Duration = Field(description="a duration like 15m, 1h or 7d")


class _CheckBase(PlanModel):
    name: Text | None = Field(None, description="a short name shown in drill reports")


class SQLCheck(_CheckBase):
    """A query run against the restored database; its first column of its first row is
    compared with `min`/`max`/`equals`, or must be true when none is given."""

    type: Literal["sql"]
    source: SourceName
    database: DatabaseName | None = None
    query: Text = Field(description="a SQL query like SELECT count(*) FROM users")
    min: int | None = Field(None, description="a whole number the result must reach")
    max: int | None = Field(None, description="a whole number the result must not exceed")
    equals: int | str | None = Field(None, description="the exact value the result must have")

    def label(self) -> str:
        return self.name or f"sql on {self.source}: {self.query}"


class UploadsCheck(_CheckBase):
    """Upload paths named by the restored database must exist in the restored files."""

    type: Literal["uploads"]
    source: SourceName = Field(description="the database source whose rows name uploads")
    database: DatabaseName | None = None
    query: Text = Field(description="a query returning upload paths, like SELECT path FROM files")
    files: SourceName = Field(description="the files source that holds the uploads")
    limit: int = Field(1000, ge=0, description="how many paths to check at most (0: all)")

    def label(self) -> str:
        return self.name or f"uploads named by {self.source} exist in {self.files}"


class CommandCheck(_CheckBase):
    """A smoke command run with the scratch environment in its variables; exit 0 passes."""

    type: Literal["command"]
    command: Text = Field(description="a command line, like ./manage.py check")
    timeout: Duration = Field(timedelta(minutes=5), description="a duration like 5m")

    def label(self) -> str:
        return self.name or f"command `{self.command}`"


class HTTPCheck(_CheckBase):
    """Start the app against the scratch environment (optional), GET a URL, expect a status."""

    type: Literal["http"]
    command: Text | None = Field(None, description="the command that starts the app, if any")
    url: Text = Field(description="a URL like http://127.0.0.1:{port}/health")
    status: int = Field(200, ge=100, le=599, description="an HTTP status code like 200")
    contains: Text | None = Field(None, description="text the response body must contain")
    timeout: Duration = Field(timedelta(seconds=60), description="a duration like 60s")

    def label(self) -> str:
        return self.name or f"GET {self.url} answers {self.status}"


AnyCheck = SQLCheck | UploadsCheck | CommandCheck | HTTPCheck
CheckConfig = Annotated[AnyCheck, Field(discriminator="type")]


class DrillConfig(PlanModel):
    """How `safehold drill` builds its scratch environment and what it checks."""

    scratch_postgres: PostgresURL | None = Field(
        default=None, description="a scratch PostgreSQL server URL (safehold_drill_* databases)"
    )
    scratch_mysql: MySQLURL | None = Field(
        default=None, description="a scratch MySQL/MariaDB server URL (safehold_drill_* databases)"
    )
    interval: Duration = Field(default=timedelta(days=31), description="how often drills must pass")
    freshness_columns: list[Text] = Field(
        default_factory=lambda: ["created_at", "updated_at", "inserted_at", "modified_at"],
        description='column names that date records, like ["created_at"]',
    )
    checks: list[CheckConfig] = Field(
        default_factory=list, description="a list of [[drill.checks]] tables"
    )
    pitr_at: Text = Field(
        default="-5m",
        description='point-in-time sources: the moment the drill recovers to, like "-5m"',
    )


class IncidentConfig(PlanModel):
    """What `safehold incident start` and `end` run around an incident (both optional)."""

    freeze: Text | None = Field(
        default=None, description="a command that stops writes, like ./manage.py maintenance on"
    )
    unfreeze: Text | None = Field(
        default=None,
        description="a command that allows writes again, like ./manage.py maintenance off",
    )
    timeout: Duration = Field(default=timedelta(minutes=5), description="a duration like 60s or 5m")


def _unique_names(items: Sequence[SourceBase | LocalDestination], what: str) -> None:
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.name in first_index:
            raise problem(
                f"a unique {what} name",
                found=f'"{item.name}" (also the name of {what}s[{first_index[item.name]}])',
                hint=f"give every {what} its own name",
                at=(index, "name"),
            )
        first_index[item.name] = index


class Plan(PlanModel):
    """A whole plan file. `load_plan` builds it; `file`, `redactor()` and `substitutions`
    are only known when it was loaded from a file."""

    app: AppName
    env: EnvName
    owners: Owners = Field(default_factory=Owners, description="an [owners] table")
    targets: Targets = Field(description="a [targets] table with rpo and rto")
    sources: list[SourceConfig] = Field(
        default_factory=list,
        validate_default=True,
        description="a list of [[sources]] tables",
    )
    destinations: list[DestinationConfig] = Field(
        default_factory=list,
        validate_default=True,
        description="a list of [[destinations]] tables",
    )
    retention: dict[str, Any] = Field(default_factory=dict, description="a [retention] table")
    drill: DrillConfig = Field(default_factory=DrillConfig, description="a [drill] table")
    schedule: ScheduleConfig | None = Field(None, description="a [schedule] table")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="an [alerts] table")
    pings: PingsConfig = Field(default_factory=PingsConfig, description="a [pings] table")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="a [metrics] table")
    release: ReleaseConfig | None = Field(None, description="a [release] table")
    incident: IncidentConfig = Field(
        default_factory=IncidentConfig, description="an [incident] table"
    )

    _file: Path | None = PrivateAttr(None)
    _redactor: Redactor = PrivateAttr(default_factory=Redactor)
    _substitutions: list[Substitution] = PrivateAttr(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, value: list[SourceBase]) -> list[SourceBase]:
        if not value:
            raise problem("at least one source", found="none", hint="add a [[sources]] table")
        _unique_names(value, "source")
        return value

    @field_validator("destinations")
    @classmethod
    def _check_destinations(cls, value: list[LocalDestination]) -> list[LocalDestination]:
        if not value:
            raise problem(
                "at least one destination", found="none", hint="add a [[destinations]] table"
            )
        _unique_names(value, "destination")
        return value

    @model_validator(mode="after")
    def _checks_name_sources(self) -> Self:
        kinds = {source.name: source.type for source in self.sources}
        for index, check in enumerate(self.drill.checks):
            wanted: list[tuple[str, str, tuple[str, ...]]] = []
            if isinstance(check, SQLCheck | UploadsCheck):
                wanted.append(("source", check.source, ("postgres", "mysql", "sqlite")))
            if isinstance(check, UploadsCheck):
                wanted.append(("files", check.files, ("files", "bucket")))
            for key, name, types in wanted:
                if kinds.get(name) not in types:
                    raise problem(
                        f"the name of a {' or '.join(types)} source",
                        found=f'"{name}"',
                        hint="the plan's sources are: " + ", ".join(kinds),
                        at=("drill", "checks", index, key),
                    )
        return self

    @model_validator(mode="after")
    def _release_names_a_database(self) -> Self:
        if self.release is None:
            return self
        databases = [s.name for s in self.sources if s.type in ("postgres", "mysql", "sqlite")]
        names = [self.release.source] + [
            signal.source for signal in self.release.signals if isinstance(signal, SQLSignal)
        ]
        for name in names:
            if name is not None and name not in databases:
                raise problem(
                    "the name of a postgres, mysql or sqlite source",
                    found=f'"{name}"',
                    hint="the plan's database sources are: " + (", ".join(databases) or "none"),
                    at=("release", "source"),
                )
        if not databases:
            raise problem(
                "a database source for the release ledger",
                found="none",
                hint="add a postgres, mysql or sqlite source, or remove [release]",
                at=("release",),
            )
        return self

    def attach(
        self, file: Path | None, redactor: Redactor, substitutions: Sequence[Substitution]
    ) -> None:
        """Record where the plan came from (the loader calls this)."""
        self._file = file
        self._redactor = redactor
        self._substitutions = list(substitutions)
        for url in [channel.url for channel in self.alerts.channels] + self.pings.urls():
            add_secret_url(redactor, url)
        for source in self.sources:
            if isinstance(source, BucketConfig):
                for key in (source.access_key_id, source.secret_access_key):
                    if key:
                        redactor.add(key)
        for destination in self.destinations:
            for key in (destination.access_key_id, destination.secret_access_key):
                if key:
                    redactor.add(key)

    @property
    def file(self) -> Path | None:
        """The plan file this plan was loaded from."""
        return self._file

    @property
    def base_dir(self) -> Path:
        """The plan's folder: relative paths and commands are relative to it."""
        return self._file.parent if self._file is not None else Path.cwd()

    @property
    def name_prefix(self) -> str:
        """`<app>-<env>`, the prefix of this plan's snapshot names."""
        return f"{self.app}-{self.env}"

    @property
    def substitutions(self) -> list[Substitution]:
        """Every `${VAR}` replaced while loading: key path, variable, value, origin."""
        return list(self._substitutions)

    def interpolated_paths(self) -> set[str]:
        """Key paths (like `sources[0].url`) whose values came from interpolation."""
        return {item.path for item in self._substitutions}

    def redactor(self) -> Redactor:
        """Replaces every secret of this plan with `***` in any text."""
        return self._redactor

    def source(self, name: str) -> AnySource:
        for source in self.sources:
            if source.name == name:
                return source
        raise UsageError(
            f"the plan has no source named {name!r}",
            hint="its sources are: " + ", ".join(source.name for source in self.sources),
        )

    def destination(self, name: str | None = None) -> LocalDestination:
        """The destination named `name`, or the first one."""
        if name is None:
            return self.destinations[0]
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise UsageError(
            f"the plan has no destination named {name!r}",
            hint="its destinations are: " + ", ".join(d.name for d in self.destinations),
        )
