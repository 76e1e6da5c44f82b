"""Object versions of a versioned S3 bucket, below an S3Backend's prefix: what `safehold
rescue` reads and changes to put a repository back as it was at a given time.

Nothing here destroys data: a delete marker is removed by its own version id (which brings the
version below it back), an overwritten object is put back by copying its older version over it
(CopyObject from that version id: the newer version stays, as a noncurrent version), and an
object that did not exist yet is hidden behind a new delete marker (its versions stay).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from safehold.backends.s3 import S3Backend

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CopySourceTypeDef


@dataclass(frozen=True)
class ObjectVersion:
    """One version (or delete marker) of one object; `name` is below the backend's prefix."""

    name: str
    version_id: str
    modified: datetime
    delete_marker: bool
    latest: bool
    size: int = 0
    etag: str = ""  # the content's ETag ("" for a delete marker)


def bucket_versioning(backend: S3Backend) -> str | None:
    """The bucket's versioning state: "Enabled", "Suspended", or None (never enabled)."""
    response = backend._call(
        "read the versioning setting",
        None,
        lambda: backend.client.get_bucket_versioning(Bucket=backend.bucket),
    )
    status = response.get("Status")
    return str(status) if status else None


def list_versions(backend: S3Backend) -> Iterator[ObjectVersion]:
    """Every version and delete marker of every object below the backend's prefix."""
    base = backend._key_prefix
    paginator = backend.client.get_paginator("list_object_versions")
    iterator = iter(paginator.paginate(Bucket=backend.bucket, Prefix=base))
    while True:
        page: Any = backend._call("list versions", "all objects", lambda: next(iterator, None))
        if page is None:
            return
        for item in page.get("Versions", []):
            key = item["Key"]
            if key.startswith(base) and not key.endswith("/"):
                yield ObjectVersion(
                    key[len(base) :], str(item.get("VersionId") or "null"),
                    item["LastModified"], False, bool(item.get("IsLatest")),
                    int(item.get("Size", 0)), str(item.get("ETag") or ""),
                )  # fmt: skip
        for item in page.get("DeleteMarkers", []):
            key = item["Key"]
            if key.startswith(base):
                yield ObjectVersion(
                    key[len(base) :], str(item.get("VersionId") or "null"),
                    item["LastModified"], True, bool(item.get("IsLatest")),
                )  # fmt: skip


def remove_version(backend: S3Backend, name: str, version_id: str) -> None:
    """Delete one version (here: a delete marker) by its id."""
    key = backend._key(name)
    backend._call(
        "remove a delete marker",
        name,
        lambda: backend.client.delete_object(Bucket=backend.bucket, Key=key, VersionId=version_id),
    )


def restore_version(backend: S3Backend, name: str, version_id: str) -> None:
    """Make version `version_id` current again: copy it over the object (under the backend's
    Object Lock retention, if it has one)."""
    key = backend._key(name)
    source: CopySourceTypeDef = {"Bucket": backend.bucket, "Key": key, "VersionId": version_id}
    extra = backend._lock_args(name)
    backend._call(
        "restore an older version",
        name,
        lambda: backend.client.copy_object(
            Bucket=backend.bucket, Key=key, CopySource=source, **extra
        ),
    )


def hide(backend: S3Backend, name: str) -> None:
    """Put a delete marker on the object (a delete without a version id): its versions stay."""
    key = backend._key(name)
    backend._call(
        "hide an object",
        name,
        lambda: backend.client.delete_object(Bucket=backend.bucket, Key=key),
    )
