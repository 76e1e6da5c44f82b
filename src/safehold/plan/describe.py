"""`describe_plan(plan)`: what a plan backs up, where to, and who to call, without any secret."""

from __future__ import annotations

from safehold.plan.models import (
    AnySource,
    BucketConfig,
    CommandConfig,
    FilesConfig,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SecretsConfig,
)
from safehold.plan.operations import describe_operations
from safehold.policy.duration import format_duration
from safehold.redaction import redact_url


def _source_details(source: AnySource) -> list[str]:
    details: list[str] = []
    if isinstance(source, PostgresConfig | MySQLConfig):
        names = source.database_names()
        details.append("databases: " + (", ".join(names) if names else "the user's default"))
    if isinstance(source, PostgresConfig):
        details.append("with roles and grants" if source.globals else "without roles and grants")
        details.append(f"{source.jobs} restore jobs")
    if isinstance(source, FilesConfig) and source.exclude:
        details.append("excluding " + ", ".join(source.exclude))
    if isinstance(source, CommandConfig):
        details.append(f"run in {source.cwd}")
        details.append(f"output stored as {source.output_name}")
        details.append(f"timeout {format_duration(source.timeout)}")
    if isinstance(source, BucketConfig):
        details.append(_bucket_login(source))
        if source.endpoint:
            details.append(f"endpoint {redact_url(source.endpoint)}")
        if source.region:
            details.append(f"region {source.region}")
        if source.exclude:
            details.append("excluding " + ", ".join(source.exclude))
    if isinstance(source, SecretsConfig):
        details.append(f"encrypted with age to {len(source.recipients)} recipient(s)")
        details.append(
            f"identity from `{source.identity_command}`"
            if source.identity_command
            else "identity given at restore time (--identity FILE)"
        )
    if source.owner:
        details.append(f"owner {source.owner}")
    if source.credentials_at:
        details.append(f"credentials at {source.credentials_at}")
    return details


def _bucket_login(source: BucketConfig) -> str:
    """Which login a bucket source uses, named, never shown."""
    if source.access_key_id:
        return "signs in with its own keys (access_key_id/secret_access_key)"
    if source.profile:
        return f"signs in with the AWS profile {source.profile}"
    return "signs in with the process's AWS_* variables (no keys in the plan)"


def _location(source: AnySource) -> str:
    return redact_url(source.url) if isinstance(source, BucketConfig) else source.location()


def describe_plan(plan: Plan) -> list[str]:
    """Lines for `safehold plan check`; every line passes through the plan's redactor."""
    lines = []
    if plan.file is not None:
        lines.append(f"plan: {plan.file}")
    lines.append(f"app: {plan.app} ({plan.env})")
    lines.append(
        f"targets: lose at most {format_duration(plan.targets.rpo)} of data (RPO), "
        f"restore within {format_duration(plan.targets.rto)} (RTO)"
    )
    if plan.owners.restore_approvers:
        lines.append("restore approvers: " + ", ".join(plan.owners.restore_approvers))
    for name, how in plan.owners.contacts.items():
        lines.append(f"contact {name}: {how}")
    for source in plan.sources:
        lines.append(f"source {source.name} ({source.type}): {_location(source)}")
        lines.extend(f"  {detail}" for detail in _source_details(source))
        if source.notes:
            lines.append(f"  notes: {source.notes}")
    for destination in plan.destinations:
        lines.append(
            f"destination {destination.name} ({destination.type}): {destination.location()}"
        )
        lines.append(f"  password from {destination.password_source()}")
    lines.extend(_drill_lines(plan))
    lines.extend(describe_operations(plan))
    lines.extend(_incident_lines(plan))
    redact = plan.redactor()
    return [redact(line) for line in lines]


def _drill_lines(plan: Plan) -> list[str]:

    drill = plan.drill
    servers = (("postgres", drill.scratch_postgres), ("mysql", drill.scratch_mysql))
    scratch = [f"{kind} on {redact_url(url)}" for kind, url in servers if url]
    lines = [
        f"drills: at least every {format_duration(drill.interval)}, into "
        + (", ".join(scratch) if scratch else "throwaway servers and temp folders")
    ]
    lines.extend(f"  check: {check.label()}" for check in drill.checks)
    return lines


def _incident_lines(plan: Plan) -> list[str]:
    incident = plan.incident
    if not incident.freeze and not incident.unfreeze:
        return []
    freeze = f"`{incident.freeze}`" if incident.freeze else "nothing (no [incident] freeze)"
    unfreeze = f"`{incident.unfreeze}`" if incident.unfreeze else "nothing (no unfreeze)"
    return [
        f"incident: start runs {freeze}, end runs {unfreeze} "
        f"(timeout {format_duration(incident.timeout)} each)"
    ]
