"""Deciding which snapshots to keep: retention policies (`forget`)."""

from safehold.policy.retention import (
    DEFAULT_POLICY,
    Decision,
    RetentionPolicy,
    apply_retention,
    explain,
    from_mapping,
    group_key,
)

__all__ = [
    "DEFAULT_POLICY",
    "Decision",
    "RetentionPolicy",
    "apply_retention",
    "explain",
    "from_mapping",
    "group_key",
]
