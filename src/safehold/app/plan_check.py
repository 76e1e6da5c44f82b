"""`safehold plan check`: what can be seen wrong in a plan without a network (paths that do not
exist, alert URLs apprise does not know, credentials written into an S3 URL), and, with
`connect=True`, a try of every source and destination (paths readable, databases answering
with the plan's credentials, dump tools new enough, repositories opening).

These are not plan validation (plan/models.py), which every command runs on load: a drill or
restore machine may not have the app's folders yet, and `backup` fails the source anyway.
Findings never hold a secret: URLs are named by their scheme and host, and every message
passes through the plan's redactor."""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from safehold.app.opener import open_destination
from safehold.backends.s3 import location_without_credentials
from safehold.errors import SafeholdError
from safehold.plan.models import (
    AnySource,
    BucketConfig,
    FilesConfig,
    LocalDestination,
    Plan,
    SecretsConfig,
    SQLiteConfig,
)
from safehold.sources.from_plan import build_source

Status = Literal["ok", "FAIL", "skip"]
_AUTH_WORDS = ("password authentication failed", "access denied", "authentication failed")
_BUCKET_LOGIN_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoCredentialsError",
    "PartialCredentialsError", "InvalidToken", "ExpiredToken", "ProfileNotFound",
})  # fmt: skip
_BUCKET_MISSING_CODES = frozenset({"NoSuchBucket", "InvalidBucketName"})


@dataclass(frozen=True)
class Finding:
    """One check: its status, what was checked, what was found, and the fix (for a FAIL)."""

    status: Status
    what: str
    detail: str = ""
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        text = f"{self.status} {self.what}"
        if self.detail:
            text += f": {self.detail}"
        if self.fix:
            text += f" ({self.fix})"
        return text

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# ----- offline ---------------------------------------------------------------------------


def nearest_name(path: Path) -> str | None:
    """The name beside `path` closest to its missing part ("meida" -> "media"), if any."""
    missing = path
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    try:
        names = [entry.name for entry in os.scandir(missing.parent)]
    except OSError:
        return None
    found = difflib.get_close_matches(missing.name, names, n=1, cutoff=0.6)
    return found[0] if found else None


def _shown(path: Path, plan: Plan) -> str:
    try:
        return str(path.relative_to(plan.base_dir))
    except ValueError:
        return str(path)


def _missing_path(what: str, path: Path, plan: Plan) -> Finding:
    near = nearest_name(path)
    fix = f'did you mean "{near}"?' if near else "create it, or correct the path in the plan"
    return Finding("FAIL", what, f"{_shown(path, plan)} does not exist", fix)


def _source_paths(source: AnySource) -> list[Path]:
    if isinstance(source, FilesConfig):
        return [Path(path) for path in source.paths]
    if isinstance(source, SQLiteConfig):
        return [Path(source.path)]
    return []


def _path_findings(plan: Plan) -> Iterator[Finding]:
    for source in plan.sources:
        for path in _source_paths(source):
            if not path.exists():
                yield _missing_path(f"source {source.name}", path, plan)


@cache
def apprise_schemes() -> frozenset[str]:
    """Every URL scheme the installed apprise has a plugin for (asked of apprise itself)."""
    with warnings.catch_warnings():  # apprise imports the deprecated imghdr
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        details = apprise.Apprise().details()
    schemes: set[str] = set()
    for schema in details["schemas"]:
        for key in ("protocols", "secure_protocols"):
            value = schema.get(key) or ()
            schemes.update([value] if isinstance(value, str) else value)
    return frozenset(scheme.lower() for scheme in schemes)


def _alert_findings(plan: Plan) -> Iterator[Finding]:
    urls = [(f"alert channel {c.name}", c.url) for c in plan.alerts.channels]
    if not urls:
        return
    known = apprise_schemes()
    for what, url in urls:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in known:
            near = difflib.get_close_matches(scheme, sorted(known), n=1)
            fix = f"did you mean {near[0]}://?" if near else "see the apprise wiki for its URLs"
            yield Finding("FAIL", what, f"apprise knows no {scheme}:// URLs", fix)


def _s3_urls(plan: Plan) -> Iterator[tuple[str, str]]:
    for destination in plan.destinations:
        if destination.type == "s3" and destination.url:
            yield f"destination {destination.name}", destination.url
    for source in plan.sources:  # bucket sources have a url too
        url = getattr(source, "url", None)
        if isinstance(url, str) and url.startswith("s3:"):
            yield f"source {source.name}", url


def _s3_findings(plan: Plan) -> Iterator[Finding]:
    for what, url in _s3_urls(plan):
        clean = location_without_credentials(url)
        if clean is not None:
            yield Finding(
                "FAIL",
                what,
                "the url has credentials written into it",
                f"write url = {clean!r} and give access_key_id/secret_access_key as ${{VAR}} "
                "references, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment",
            )


def _login_findings(plan: Plan) -> Iterator[Finding]:
    """A destination's secret_access_key written into the plan file itself, not as a
    `${VAR}` reference: the plan is meant to be committed, its secrets are not."""
    given = plan.interpolated_paths()
    for index, destination in enumerate(plan.destinations):
        if destination.secret_access_key and (
            f"destinations[{index}].secret_access_key" not in given
        ):
            variable = f"{destination.name.upper().replace('-', '_')}_S3_SECRET"
            yield Finding(
                "FAIL",
                f"destination {destination.name}",
                "secret_access_key is written into the plan",
                f'write secret_access_key = "${{{variable}}}" and set {variable} in the '
                "environment or the .env beside the plan (not committed)",
            )


def offline_findings(plan: Plan, *, paths: bool = True) -> list[Finding]:
    """What is wrong in the plan that can be seen without connecting anywhere (`paths`:
    also the source paths that do not exist)."""
    findings = [*(_path_findings(plan) if paths else ()), *_alert_findings(plan),
                *_s3_findings(plan), *_login_findings(plan)]  # fmt: skip
    return [_redacted(plan, finding) for finding in findings]


def _redacted(plan: Plan, finding: Finding) -> Finding:
    redact = plan.redactor()
    return Finding(finding.status, finding.what, redact(finding.detail), redact(finding.fix))


# ----- connecting ------------------------------------------------------------------------


SourceCheck = Callable[[AnySource, Plan], list[Finding]]


def _check_paths(source: AnySource, plan: Plan) -> list[Finding]:
    findings = []
    for path in _source_paths(source):
        what = f"source {source.name}: {_shown(path, plan)}"
        if not path.exists():
            findings.append(_missing_path(f"source {source.name}", path, plan))
        elif not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            findings.append(
                Finding("FAIL", what, "not readable", "let the user running safehold read it")
            )
        else:
            findings.append(Finding("ok", what, "exists and is readable"))
    return findings


def _credential_hint(message: str, source: AnySource) -> str:
    if any(word in message.lower() for word in _AUTH_WORDS):
        return (
            "check the user and password in the url (the variable it names, in the "
            "environment or the .env beside the plan); credentials_at: "
            + (source.credentials_at or "not written in the plan")
        )
    return "check that the server runs and the url's host, port and database"


def _database_failure(source: AnySource, err: SafeholdError) -> Finding:
    return Finding(
        "FAIL", f"source {source.name}", err.message, _credential_hint(err.message, source)
    )


def _check_postgres(source: AnySource, plan: Plan) -> list[Finding]:
    from safehold.sources.postgres import PostgresSource  # psycopg loads only when used

    built = build_source(source, plan)
    assert isinstance(built, PostgresSource)
    try:
        probe = built.probe()
    except SafeholdError as err:
        return [_database_failure(source, err)]
    answered = Finding("ok", f"source {source.name}", f"PostgreSQL {probe.server_version} answers")
    if probe.problem is not None:
        tool = Finding("FAIL", f"source {source.name}: pg_dump", *probe.problem)
    else:
        tool = Finding("ok", f"source {source.name}: pg_dump", probe.tool_version)
    return [answered, tool]


def _check_mysql(source: AnySource, plan: Plan) -> list[Finding]:
    from safehold.sources.mysql import MysqlSource

    built = build_source(source, plan)
    assert isinstance(built, MysqlSource)
    try:
        server, tool = built.probe()
    except SafeholdError as err:
        return [_database_failure(source, err)]
    what = f"source {source.name}"
    found = [Finding("ok", what, f"MySQL/MariaDB {server} answers")]
    if tool:
        found.append(Finding("ok", f"{what}: {os.path.basename(built.dump_tool)}", tool))
    else:
        found.append(
            Finding("FAIL", f"{what}: {built.dump_tool}", "does not run",
                    "install the client tools (Debian: apt-get install mariadb-client)")
        )  # fmt: skip
    return found


def _bucket_hint(code: str, source: BucketConfig) -> str:
    if code in _BUCKET_LOGIN_CODES:
        login = (
            "access_key_id/secret_access_key (the variables they name)"
            if source.access_key_id
            else f"the profile {source.profile}"
            if source.profile
            else "the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables (no keys in the plan)"
        )
        return f"check {login}, and that the key may list the bucket; credentials_at: " + (
            source.credentials_at or "not written in the plan"
        )
    if code in _BUCKET_MISSING_CODES:
        return "check the bucket name in the url (and the variable it names)"
    return "check the url's endpoint (host and port) and that the server runs"


def _check_bucket(source: AnySource, plan: Plan) -> list[Finding]:
    from safehold.sources.bucket import BucketSource  # boto3 loads only when used

    assert isinstance(source, BucketConfig)
    built = build_source(source, plan)
    assert isinstance(built, BucketSource)
    probe = built.probe()
    what = f"source {source.name}"
    if probe.problem:
        return [Finding("FAIL", what, f"listing {built.access.display}: {probe.problem}",
                        _bucket_hint(probe.problem, source))]  # fmt: skip
    objects = f"{probe.objects}{'+' if probe.more else ''} object(s) on the first page"
    return [Finding("ok", what, f"lists {built.access.display}: {objects}")]


def _check_secrets(source: AnySource, plan: Plan) -> list[Finding]:
    """Every file and variable the backup will read is there (named, never read); the
    recipients are age keys (the plan's loader parsed them already: said for the record)."""
    from safehold.sources.secrets import SecretsSource  # pyrage loads only when used

    assert isinstance(source, SecretsConfig)
    built = build_source(source, plan)  # the process's environment, as backup reads it
    assert isinstance(built, SecretsSource)
    what = f"source {source.name}"
    problems = built.probe()
    if problems:
        fix = "restore the files from the password manager, fix `files`/`env` in the plan, or "
        fix += "run with the app's environment"
        return [Finding("FAIL", what, "; ".join(problems), fix)]
    found = f"{len(source.files)} file pattern(s) and {len(source.env)} variable(s) present"
    return [Finding("ok", what, f"{found}; {len(source.recipients)} age recipient(s) parse")]


def _check_command(source: AnySource, plan: Plan) -> list[Finding]:
    return [Finding("skip", f"source {source.name}", "a command source is only run by backup")]


SOURCE_CHECKS: dict[str, SourceCheck] = {
    "files": _check_paths,
    "sqlite": _check_paths,
    "postgres": _check_postgres,
    "mysql": _check_mysql,
    "command": _check_command,
    "bucket": _check_bucket,
    "secrets": _check_secrets,
}


def _check_destination(
    destination: LocalDestination, plan: Plan, environ: Mapping[str, str]
) -> Finding:
    what = f"destination {destination.name}"
    try:
        repo = open_destination(plan, destination.name, environ)
    except SafeholdError as err:
        return Finding("FAIL", what, err.message, err.hint or "")
    return Finding("ok", what, f"repository {repo.config.id[:10]} opens at {repo.backend.location}")


def connect_findings(plan: Plan, environ: Mapping[str, str]) -> list[Finding]:
    """Try every source (by its type's check in SOURCE_CHECKS; a type without one is a skip)
    and open every destination. Never raises for what it checks: each outcome is a Finding."""
    findings: list[Finding] = []
    for source in plan.sources:
        check = SOURCE_CHECKS.get(source.type)
        if check is None:
            findings.append(Finding("skip", f"source {source.name}", f"no check for {source.type}"))
            continue
        try:
            findings.extend(check(source, plan))
        except SafeholdError as err:
            findings.append(Finding("FAIL", f"source {source.name}", err.message, err.hint or ""))
    refused = {f.what for f in _s3_findings(plan)}  # already refused: not opened with a secret
    findings.extend(
        _check_destination(d, plan, environ)
        for d in plan.destinations
        if f"destination {d.name}" not in refused
    )
    return [_redacted(plan, finding) for finding in findings]


def check_plan(plan: Plan, environ: Mapping[str, str], *, connect: bool = False) -> list[Finding]:
    """The offline findings, and with `connect` the findings of trying everything. Path
    problems are reported once: by the connection check when it runs."""
    offline = offline_findings(plan, paths=not connect)
    return [*offline, *connect_findings(plan, environ)] if connect else offline
