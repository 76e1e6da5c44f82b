"""An S3-compatible bucket (or a prefix of one) as a source: uploads on S3, R2, B2 or MinIO.

Every object becomes the file `/<source>/<key below the prefix>` of the snapshot tree; its
bytes are streamed from the GET response through the chunker (no temporary file), hashed with
SHA-256 on the way, and up to `workers` GETs run at once (the archiver's reader pool). What the
bytes alone do not carry — ETag, size, LastModified, content-type, cache-control,
content-disposition, content-encoding, content-language and the `x-amz-meta-*` user metadata —
is recorded per object in the source's manifest (`objects`), which restores read back.

Incremental: `use_parent` hands the source the manifest of the same source in the parent
snapshot. An object whose ETag, size and LastModified equal that record is marked
`unchanged`: the archiver keeps the parent's file node (its content blobs) and the object is
never fetched. Deleted objects are simply not listed again; an overwritten one has a new ETag
or LastModified and is fetched again.

Credentials: the source's own keys or profile from the plan, else boto3's default chain (the
process's AWS_* variables). No message names a key.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from safehold.backends.s3 import S3Location, parse_s3_location
from safehold.errors import UsageError
from safehold.fs.archiver import BackupItem
from safehold.fs.excludes import ExcludeMatcher
from safehold.fs.restorer import RestoreOptions, Restorer
from safehold.redaction import register_secret
from safehold.repo.gotypes import GoTime
from safehold.repo.pack import BlobType
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot
from safehold.repo.walk import find_node, walk_tree
from safehold.sources.base import KEEP_ACCOUNTS, AccountOptions, Manifest, RestoreReport, item_path
from safehold.sources.process import SourceError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# GET/PUT response fields kept per object, as (response key, put_object argument)
HEADERS = (
    ("ContentType", "content_type"),
    ("CacheControl", "cache_control"),
    ("ContentDisposition", "content_disposition"),
    ("ContentEncoding", "content_encoding"),
    ("ContentLanguage", "content_language"),
)
UPLOAD_PART = 8 * 1024 * 1024
_HINT = (
    "check the source's url, its access_key_id/secret_access_key (or profile, or the AWS_* "
    "variables) and that the key may list and read the bucket"
)


@dataclass(frozen=True)
class BucketAccess:
    """Where a bucket is and how to sign in to it. `access_key_id`/`secret_access_key` (or
    `profile`) replace boto3's default chain; `endpoint` replaces the location's."""

    location: S3Location
    access_key_id: str | None = None
    secret_access_key: str | None = None
    profile: str | None = None
    region: str | None = None
    endpoint: str | None = None

    @classmethod
    def parse(cls, url: str, **options: str | None) -> BucketAccess:
        access = cls(parse_s3_location(url), **options)
        for secret in (access.access_key_id, access.secret_access_key):
            if secret:
                register_secret(secret)
        return access

    def at(self, url: str) -> BucketAccess:
        """The same credentials for another location (a restore target)."""
        return replace(self, location=parse_s3_location(url), endpoint=None)

    @property
    def endpoint_url(self) -> str | None:
        return self.endpoint or self.location.endpoint_url

    @property
    def display(self) -> str:
        loc = self.location
        if self.endpoint:
            loc = replace(loc, endpoint_url=self.endpoint)
        return loc.display

    def client(self, pool: int = 10, attempts: int = 5) -> S3Client:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            profile_name=self.profile,
        )
        region = (
            self.region
            or os.environ.get("AWS_DEFAULT_REGION")
            or self.location.region
            or session.region_name
            or "us-east-1"
        )
        config = Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": attempts},
            max_pool_connections=pool,
            connect_timeout=10,
            read_timeout=120,
        )
        return session.client("s3", endpoint_url=self.endpoint_url, region_name=region,
                               config=config)  # fmt: skip


def describe_error(err: Exception, what: str) -> SourceError:
    """One line for a failed request: the operation, the bucket, the server's code."""
    return SourceError(f"{what}: {error_code(err)}", hint=_HINT)


def error_code(err: Exception) -> str:
    """The server's error code (NoSuchBucket, …), or the exception's class name."""
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(err).__name__


def _calls(what: str) -> Any:
    """Run a block of bucket requests, turning boto's errors into one SourceError line."""
    from botocore.exceptions import BotoCoreError, ClientError

    @contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as err:
            raise describe_error(err, what) from None

    return guard()


@dataclass(frozen=True)
class Listed:
    """One object of a listing: its key below the prefix, and what identifies its version."""

    relative: str
    key: str
    size: int
    etag: str
    last_modified: str  # ISO 8601 as the listing gives it

    def matches(self, record: dict[str, Any] | None) -> bool:
        return (
            record is not None
            and bool(record.get("sha256"))
            and (record.get("etag"), record.get("size"), record.get("last_modified"))
            == (self.etag, self.size, self.last_modified)
        )


def list_objects(client: S3Client, location: S3Location, what: str) -> Iterator[Listed]:
    """Every object under the location's prefix (a prefix is a folder: `p` lists `p/...`)."""
    under = f"{location.prefix}/" if location.prefix else ""
    with _calls(what):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=under
        )
        for page in pages:
            for entry in page.get("Contents", []):
                key = entry["Key"]
                yield Listed(
                    key[len(under) :], key, int(entry.get("Size", 0)),
                    str(entry.get("ETag", "")), _iso(entry.get("LastModified")),
                )  # fmt: skip


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _tree_parts(relative: str) -> list[str] | None:
    """A key's folder names in the tree; None when it cannot be a file there (a folder
    marker `a/`, an empty or `.`/`..` part)."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


class _HashingBody:
    """`readinto` over a GET response body, hashing and counting what passes."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self.digest = hashlib.sha256()
        self.size = 0

    def readinto(self, buffer: memoryview) -> int:
        data = self._body.read(len(buffer))
        count = len(data)
        if count:
            buffer[:count] = data
            self.digest.update(data)
            self.size += count
        return count


@dataclass(frozen=True)
class BucketProbe:
    """One listed page of the bucket under the prefix, or the server's error code."""

    objects: int = 0  # on the first page
    more: bool = False  # the listing goes on past the first page
    problem: str = ""  # the error code (NoSuchBucket, InvalidAccessKeyId, …); "" when it listed


class BucketSource:
    kind = "bucket"

    def __init__(
        self,
        name: str,
        access: BucketAccess,
        *,
        excludes: list[str] | None = None,
        workers: int = 8,
    ) -> None:
        self.name = name
        self.access = access
        self.excludes = list(excludes or [])
        self.workers = max(1, workers)
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self._previous: dict[str, dict[str, Any]] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._skipped: list[str] = []
        self.fetched = 0  # objects read with GET during the last backup

    @property
    def client(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                self._client = self.access.client(pool=self.workers + 2)
            return self._client

    def probe(self) -> BucketProbe:
        """List one page under the prefix with the source's own credentials, trying once (a
        wrong endpoint should not hold `plan check` through retries). Never raises for what
        the server or the network says: that is the probe's `problem`, an error code."""
        from botocore.exceptions import BotoCoreError, ClientError

        location = self.access.location
        try:
            page = self.access.client(pool=1, attempts=1).list_objects_v2(
                Bucket=location.bucket, Prefix=f"{location.prefix}/" if location.prefix else ""
            )
        except (BotoCoreError, ClientError) as err:
            return BucketProbe(problem=error_code(err))
        return BucketProbe(int(page.get("KeyCount", 0)), bool(page.get("IsTruncated")))

    # ----- backup -----------------------------------------------------------------------------

    def use_parent(self, manifest: Manifest) -> None:
        """The parent snapshot's manifest of this source: objects it holds unchanged are not
        fetched again."""
        objects = manifest.get("objects")
        self._previous = dict(objects) if isinstance(objects, dict) else {}

    def items(self) -> list[BackupItem]:
        matcher = ExcludeMatcher(self.excludes)
        self._records, self._skipped, self.fetched = {}, [], 0
        items = []
        what = f"source {self.name}: listing {self.access.display}"
        for listed in list_objects(self.client, self.access.location, what):
            parts = _tree_parts(listed.relative)
            if parts is None:
                self._skipped.append(listed.relative)
                continue
            if matcher and self._excluded(matcher, parts):
                continue
            previous = self._previous.get(listed.relative)
            unchanged = listed.matches(previous)
            record = dict(previous) if unchanged and previous else self._record(listed)
            self._records[listed.relative] = record
            items.append(
                BackupItem(
                    item_path(self.name, *parts),
                    stream=self._opener(listed, record),
                    mtime=_go_time(listed.last_modified),
                    unchanged=unchanged,
                    readers=self.workers,
                )
            )
        return items

    @staticmethod
    def _excluded(matcher: ExcludeMatcher, parts: list[str]) -> bool:
        path = ("/" + "/".join(parts)).encode("utf-8", "surrogateescape")
        return any(matcher.excluded(part.encode(), path) for part in parts)

    @staticmethod
    def _record(listed: Listed) -> dict[str, Any]:
        return {"size": listed.size, "etag": listed.etag, "last_modified": listed.last_modified}

    def _opener(self, listed: Listed, record: dict[str, Any]) -> Any:
        @contextmanager
        def open_object() -> Iterator[BinaryIO]:
            what = f"source {self.name}: reading {listed.relative}"
            with _calls(what):
                response = self.client.get_object(Bucket=self.access.location.bucket,
                                                  Key=listed.key)  # fmt: skip
                body = _HashingBody(response["Body"])
                try:
                    yield body  # type: ignore[misc]
                finally:
                    response["Body"].close()
            record.clear()
            record.update(self._record(listed))
            record.update(size=body.size, etag=str(response.get("ETag", listed.etag)))
            record["sha256"] = body.digest.hexdigest()
            for header, field in HEADERS:
                if response.get(header):
                    record[field] = response[header]  # type: ignore[literal-required]
            if response.get("Metadata"):
                record["metadata"] = dict(response["Metadata"])
            with self._client_lock:
                self.fetched += 1

        return open_object

    def manifest(self) -> Manifest:
        unread = [key for key, record in self._records.items() if "sha256" not in record]
        if unread:
            raise SourceError(f"source {self.name}: {len(unread)} object(s) were not read: "
                              f"{unread[0]}", hint=_HINT)  # fmt: skip
        return {
            "url": self.access.display,
            "objects": self._records,
            "count": len(self._records),
            "bytes": sum(int(record["size"]) for record in self._records.values()),
            "fetched": self.fetched,
            "skipped": self._skipped,
            "excludes": self.excludes,
        }

    # ----- production guard -------------------------------------------------------------------

    def production_location(self) -> str:
        return self.access.display

    def is_production_target(self, target: str) -> bool:
        if not target.startswith("s3:"):
            return False
        try:
            other = parse_s3_location(target)
        except UsageError:
            return False
        mine = self.access.location
        if other.bucket != mine.bucket:
            return False
        ours = [part for part in mine.prefix.split("/") if part]
        theirs = [part for part in other.prefix.split("/") if part]
        shortest = min(len(ours), len(theirs))
        return ours[:shortest] == theirs[:shortest]  # one prefix holds the other

    # ----- health -----------------------------------------------------------------------------

    def versioning(self) -> str:
        """The bucket's versioning status ("Enabled", "Suspended" or "" when never enabled);
        SourceError when the bucket cannot be asked."""
        client = self.access.client(pool=1, attempts=1)
        with _calls(f"source {self.name}: versioning of {self.access.display}"):
            answer = client.get_bucket_versioning(Bucket=self.access.location.bucket)
        return str(answer.get("Status") or "")

    # ----- restore ----------------------------------------------------------------------------

    def restore(
        self,
        repo: Repository,
        snapshot: Snapshot,
        manifest: Manifest,
        target: str,
        *,
        overwrite: bool = False,
        accounts: AccountOptions = KEEP_ACCOUNTS,  # no accounts here: ignored
    ) -> RestoreReport:
        """Into `s3:…` (a new bucket or an empty prefix; every object with its content-type
        and metadata) or into a new folder (the objects as files); verified against the
        manifest: count, sizes and the SHA-256 recorded at backup time."""
        started = time.monotonic()
        records: dict[str, dict[str, Any]] = dict(manifest.get("objects") or {})
        if target.startswith("s3:"):
            problems = self._restore_to_bucket(repo, snapshot, records, target, overwrite)
        else:
            problems = self._restore_to_folder(repo, snapshot, records, target)
        report = RestoreReport(self.name, target, time.monotonic() - started)
        total = sum(int(record["size"]) for record in records.values())
        report.details = {"objects": len(records), "bytes": total, "verified": not problems}
        report.warnings = problems[:20]
        verdict = "checksums match backup" if not problems else f"{len(problems)} difference(s)"
        report.summary.append(f"{len(records):,} objects, {total:,} bytes into {target} "
                              f"({verdict})")  # fmt: skip
        return report

    def _restore_to_folder(
        self, repo: Repository, snapshot: Snapshot, records: dict[str, dict[str, Any]], target: str
    ) -> list[str]:
        stats = Restorer(repo, RestoreOptions(root=f"/{self.name}")).restore(snapshot, target)
        if stats.errors:
            raise UsageError(
                f"source {self.name}: {len(stats.errors)} object(s) could not be restored: "
                f"{stats.errors[0][0]}: {stats.errors[0][1]}",
                hint="run `safehold check --read-data` to see what is damaged",
            )
        return verify_folder(Path(target), records)

    def _restore_to_bucket(
        self, repo: Repository, snapshot: Snapshot, records: dict[str, dict[str, Any]],
        target: str, overwrite: bool,
    ) -> list[str]:  # fmt: skip
        destination = self.access.at(target)
        client = destination.client(pool=self.workers + 2)
        loc = destination.location
        what = f"source {self.name}: restoring into {destination.display}"
        with _calls(what):
            _ensure_bucket(client, loc.bucket)
            if not overwrite and next(iter(list_objects(client, loc, what)), None) is not None:
                raise UsageError(
                    f"{destination.display} already holds objects",
                    hint="restore into a new bucket or an empty prefix",
                )
        contents = _file_contents(repo, snapshot, self.name)
        under = f"{loc.prefix}/" if loc.prefix else ""

        def upload(relative: str) -> str | None:
            record = records[relative]
            content = contents.get(relative)
            if content is None:
                return f"{relative}: not in the snapshot"
            reader = _BlobReader(repo, content)
            with _calls(f"{what}: {relative}"):
                client.upload_fileobj(
                    reader, loc.bucket, under + relative, ExtraArgs=_put_args(record),  # type: ignore[arg-type]
                    Config=_transfer_config(),
                )  # fmt: skip
            if reader.digest.hexdigest() != record.get("sha256"):
                return f"{relative}: checksum differs from the backup"
            return None

        with ThreadPoolExecutor(self.workers, "bucket-restore") as pool:
            problems = [p for p in pool.map(upload, sorted(records)) if p]
        return problems + verify_bucket(client, loc, records, what)


def _go_time(text: str) -> GoTime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    seconds = int(moment.timestamp())
    return GoTime(seconds * 1_000_000_000 + moment.microsecond * 1000, 0)


def _ensure_bucket(client: S3Client, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        client.create_bucket(Bucket=bucket)


def _put_args(record: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {header: record[field] for header, field in HEADERS if record.get(field)}
    if record.get("metadata"):
        args["Metadata"] = dict(record["metadata"])
    return args


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    # one thread per object (the pool above runs `workers` objects): memory is bounded by
    # workers x one part
    return TransferConfig(multipart_threshold=UPLOAD_PART, multipart_chunksize=UPLOAD_PART,
                          use_threads=False)  # fmt: skip


def _file_contents(repo: Repository, snapshot: Snapshot, source: str) -> dict[str, list[str]]:
    """Content blob ids of every file of the source's folder, by key below the prefix."""
    _, subtree = find_node(repo, snapshot.tree, f"/{source}")
    if subtree is None:
        return {}
    found: dict[str, list[str]] = {}
    for path, node in walk_tree(repo, subtree):
        if node.type == "file":
            found[str(path).lstrip("/")] = list(node.content or [])
    return found


class _BlobReader:
    """A file-like `read()` over a file's blobs, loaded one at a time (bounded memory)."""

    def __init__(self, repo: Repository, content: list[str]) -> None:
        self._repo = repo
        self._blobs = iter(content)
        self._buffer = b""
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            blob = next(self._blobs, None)
            if blob is None:
                break
            self._buffer += self._repo.load_blob(blob, BlobType.DATA)
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        self.digest.update(data)
        return data


def verify_folder(folder: Path, records: dict[str, dict[str, Any]]) -> list[str]:
    """Compare a folder restore with the manifest: every object there, same size, same
    SHA-256, nothing else."""
    problems = []
    for relative, record in sorted(records.items()):
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        if path.stat().st_size != record.get("size") or digest.hexdigest() != record["sha256"]:
            problems.append(f"{relative}: differs from the backup")
    extra = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()} - set(
        records
    )
    problems.extend(f"{relative}: not in the backup" for relative in sorted(extra))
    return problems


def verify_bucket(
    client: S3Client, loc: S3Location, records: dict[str, dict[str, Any]], what: str
) -> list[str]:
    """Compare the restored prefix with the manifest: the same keys and sizes (the bytes were
    hashed on their way up)."""
    listed = {item.relative: item for item in list_objects(client, loc, what)}
    problems = [f"{key}: missing" for key in sorted(set(records) - set(listed))]
    problems += [
        f"{key}: {listed[key].size} bytes, {records[key]['size']} at backup"
        for key in sorted(set(records) & set(listed))
        if listed[key].size != records[key]["size"]
    ]
    return problems
