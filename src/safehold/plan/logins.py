"""A destination's login: the storage credentials it signs in with, apart from its repository
password. Each S3 destination may give its own `access_key_id`/`secret_access_key` (as
`${VAR}` references) or a `profile`, plus `region` and `endpoint`; each SFTP destination its
own `identity` (private key file) and `known_hosts`. Without them the process-wide variables
are the fallback (AWS_* through boto3's default chain; SAFEHOLD_SFTP_IDENTITY and
SAFEHOLD_SFTP_KNOWN_HOSTS).

`s3_login` and `sftp_login` build what the backends take (app/opener.py opens every destination
through them); `describe_login` says in words which login a destination uses, never the secret;
`login_identity` is what `status` compares to tell two logins apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safehold.backends.s3 import S3Login
from safehold.redaction import register_secret

if TYPE_CHECKING:
    from safehold.plan.models import LocalDestination, Plan

SFTP_IDENTITY_ENV = "SAFEHOLD_SFTP_IDENTITY"
SFTP_KNOWN_HOSTS_ENV = "SAFEHOLD_SFTP_KNOWN_HOSTS"


def mask_key_id(key_id: str) -> str:
    """An access key id as it may be shown: `AKIA…1234` (short ones are masked whole)."""
    if len(key_id) < 12:
        return "…" + key_id[-2:] if len(key_id) > 4 else "…"
    return f"{key_id[:4]}…{key_id[-4:]}"


def s3_login(destination: LocalDestination) -> S3Login:
    """The login of an s3 destination (empty fields: boto3's default chain). Its secret is
    registered for redaction, so no output can contain it."""
    for secret in (destination.access_key_id, destination.secret_access_key):
        if secret:
            register_secret(secret)
    return S3Login(
        access_key_id=destination.access_key_id,
        secret_access_key=destination.secret_access_key,
        profile=destination.profile,
        region=destination.region,
        endpoint=destination.endpoint,
        origin=f"destination {destination.name}",
    )


@dataclass(frozen=True)
class SftpLogin:
    """The key file and known_hosts file of an sftp destination (None: the SSH agent and
    ~/.ssh's default keys; ~/.ssh/known_hosts)."""

    identity: Path | None
    known_hosts: Path | None


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None


def sftp_login(destination: LocalDestination, environ: Mapping[str, str]) -> SftpLogin:
    """The destination's own identity and known_hosts, else SAFEHOLD_SFTP_IDENTITY and
    SAFEHOLD_SFTP_KNOWN_HOSTS from `environ`."""
    return SftpLogin(
        destination.identity or _env_path(environ, SFTP_IDENTITY_ENV),
        destination.known_hosts or _env_path(environ, SFTP_KNOWN_HOSTS_ENV),
    )


def _variable_of(plan: Plan, index: int, key: str) -> str | None:
    """The `${VAR}` that gave destinations[index].key its value, if one did."""
    path = f"destinations[{index}].{key}"
    for item in plan.substitutions:
        if item.path == path:
            return item.variable
    return None


def describe_login(
    plan: Plan, destination: LocalDestination, environ: Mapping[str, str]
) -> str | None:
    """Which login the destination signs in with, in words, never the secret; None for a
    local folder. Like "key AKIA…1234 from ${OFFSITE_KEY_ID}", "the AWS profile offsite",
    "the process's AWS_* variables (key AKIA…9876)"."""
    index = plan.destinations.index(destination)
    if destination.type == "s3":
        extras = []
        if destination.region:
            extras.append(f"region {destination.region}")
        if destination.endpoint:
            extras.append(f"endpoint {destination.endpoint}")
        tail = f", {', '.join(extras)}" if extras else ""
        if destination.access_key_id:
            variable = _variable_of(plan, index, "access_key_id")
            origin = f"from ${{{variable}}}" if variable else "written in the plan"
            return f"key {mask_key_id(destination.access_key_id)} {origin}{tail}"
        if destination.profile:
            return f"the AWS profile {destination.profile}{tail}"
        key_id = environ.get("AWS_ACCESS_KEY_ID")
        if key_id:
            return f"the AWS_* environment (key {mask_key_id(key_id)}){tail}"
        if environ.get("AWS_PROFILE"):
            return f"the AWS_* environment (profile {environ['AWS_PROFILE']}){tail}"
        return f"boto3's default chain (no AWS_* variables set: ~/.aws or an instance role){tail}"
    if destination.type == "sftp":
        login = sftp_login(destination, environ)
        if destination.identity is not None:
            key = f"the key {destination.identity}"
        elif login.identity is not None:
            key = f"the key {login.identity} (from {SFTP_IDENTITY_ENV})"
        else:
            key = "the SSH agent or ~/.ssh's default keys"
        if destination.known_hosts is not None:
            hosts = f"host keys from {destination.known_hosts}"
        elif login.known_hosts is not None:
            hosts = f"host keys from {login.known_hosts} (from {SFTP_KNOWN_HOSTS_ENV})"
        else:
            hosts = "host keys from ~/.ssh/known_hosts"
        return f"{key}, {hosts}"
    return None


def uses_environment(destination: LocalDestination) -> bool:
    """Whether the destination signs in with the process-wide login (no login of its own)."""
    if destination.type == "s3":
        return not destination.access_key_id and not destination.profile
    if destination.type == "sftp":
        return destination.identity is None
    return False


def login_identity(destination: LocalDestination, environ: Mapping[str, str]) -> str | None:
    """What tells two logins apart (None for a local folder): for s3 the access key id (or
    the profile's name), for sftp the user@host and the key file. Two destinations with the
    same identity share one login. Never shown as is: it may hold a key id."""
    if destination.type == "s3":
        if destination.access_key_id:
            return f"s3 key {destination.access_key_id}"
        if destination.profile:
            return f"s3 profile {destination.profile}"
        if environ.get("AWS_ACCESS_KEY_ID"):
            return f"s3 key {environ['AWS_ACCESS_KEY_ID']}"
        return f"s3 profile {environ.get('AWS_PROFILE') or 'default'}"
    if destination.type == "sftp":
        url = destination.url or ""
        account = url.split(":", 1)[1].lstrip("/").split(":", 1)[0].split("/", 1)[0]
        identity = sftp_login(destination, environ).identity
        return f"sftp {account} with {identity or 'the default keys'}"
    return None
