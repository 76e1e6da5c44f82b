"""A repository in an S3 bucket (AWS or any S3-compatible server), laid out as restic lays it out.

Location strings are restic's:

* `s3:https://host[:port]/bucket[/prefix]` and `s3:http://...` - an S3-compatible server,
  path-style addressing (`http://host/bucket/key`), which every such server supports;
* `s3:s3.amazonaws.com/bucket[/prefix]` (or `s3:s3.<region>.amazonaws.com/...`) - AWS itself;
  any other `s3:host/bucket` means `https://host`.

Object keys are the restic names under the prefix: `prefix/config`, `prefix/data/ab/<id>`, ...
Credentials: the backend's own `S3Login` (a plan destination's access_key_id/secret_access_key
or profile, region and endpoint), else boto3's default chain (AWS_ACCESS_KEY_ID/
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws, instance roles), each backend with its own boto3
session, so two backends never share a login by accident. A location string never holds
credentials, and no message names them. The region is the login's, else AWS_DEFAULT_REGION
(else the profile's, else `us-east-1`).

Requests are retried by botocore (standard mode: throttling, 5xx, dropped connections; 8
attempts, AWS_MAX_ATTEMPTS overrides); reads are retried again here when a connection drops in
the middle of a body, which botocore does not retry.

Object Lock: with `lock_retention=("COMPLIANCE" | "GOVERNANCE", days)` every object not under
`locks/` is written with that retention plus a slack (`lock_slack`), so that what one backup
wrote is still locked for `days` when the next one runs; repo/retention.py extends the
retention of older objects (`object_retention`, `extend_retention`). `retention_until(name)`
tells when an object becomes deletable; deleting a locked object is refused by the server and
reported as ObjectLockedError("... locked until ..."); a delete the bucket policy denies is a
DeleteRefusedError, except for lock files, which are left in place (they go stale) so that a
key without any delete permission can still run backups.

Lock files in a bucket whose default retention covers every new object: restic's lock files
must stay deletable, so they are written with an explicit GOVERNANCE retention of a few
seconds (`LOCK_FILE_RETENTION`), which overrides the bucket's default. A lock that still cannot
be deleted (a provider that ignores it, a clock far off) is left to go stale with a
SafeholdWarning, never a failed command.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from safehold.backends.base import (
    Capabilities,
    DeleteRefusedError,
    FileInfo,
    ObjectData,
    ObjectLockedError,
    ObjectNotFoundError,
    RetentionMode,
)
from safehold.errors import (
    BackendError,
    BackendPermissionError,
    RepositoryExistsError,
    SafeholdWarning,
    UsageError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

LockMode = RetentionMode
T = TypeVar("T")

DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_PART_SIZE = 16 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
DEFAULT_MAX_ATTEMPTS = 8
BODY_READ_ATTEMPTS = 4
BODY_RETRY_DELAY = 0.2  # seconds, doubled on every further attempt
LOCKS_DIR = "locks/"
LOCK_FILE_RETENTION = timedelta(seconds=5)  # explicit retention of lock files, see the doc
LOCK_FILE_WAIT = timedelta(seconds=20)  # a lock file locked at most this long: wait, delete
LOCK_SLACK_SHARE = 0.1  # written and extended objects are locked days * (1 + this) ...
MIN_LOCK_SLACK = timedelta(days=1)  # ... at least this much ...
MAX_LOCK_SLACK = timedelta(days=7)  # ... but at most this much beyond the policy's days


def lock_slack(days: float) -> timedelta:
    """How far beyond `days` an object's retention is set (a tenth of `days`, at least a day
    and at most a week, never more than `days`), so that it is still locked for `days` at the
    next backup without a request for every object every time."""
    share = timedelta(days=days * LOCK_SLACK_SHARE)
    return min(max(share, MIN_LOCK_SLACK), MAX_LOCK_SLACK, timedelta(days=days))


@dataclass(frozen=True)
class BucketLock:
    """A bucket's Object Lock setting: `enabled`, and its default retention if it has one.
    `known` is False when the setting could not be read (a login without that permission)."""

    enabled: bool
    default_mode: LockMode | None = None
    default_days: float | None = None
    known: bool = True


_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "AllAccessDisabled", "AccountProblem", "InvalidToken", "ExpiredToken",
}  # fmt: skip
_NO_RETENTION_CODES = {
    "ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration", "InvalidRequest",
}  # fmt: skip
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,254}$", re.IGNORECASE)
_AWS_HOST_RE = re.compile(r"^s3(?:[.-]([a-z0-9-]+))?\.amazonaws\.com$")

CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that the bucket "
    "policy allows this operation for that key"
)
UNREACHABLE_HINT = (
    "check the URL in the repository location (scheme, host, port) and that the S3 server "
    "is running and reachable"
)


@dataclass(frozen=True)
class S3Login:
    """How one backend signs in: its own keys or a profile (else boto3's default chain, i.e.
    the process-wide AWS_* variables), and optionally its region and an endpoint that replaces
    the location's. `origin` names where the login was configured, for hints ("destination
    offsite"); the secret is never shown (repr=False)."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    profile: str | None = None
    region: str | None = None
    endpoint: str | None = None
    origin: str = ""

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    def hint(self) -> str:
        """What to check when this login is refused."""
        if not self.origin:
            return CREDENTIALS_HINT
        where = f" of {self.origin}"
        if self.has_keys:
            return (
                f"check access_key_id/secret_access_key{where} and that the bucket policy allows "
                "this operation for that key"
            )
        if self.profile:
            return (
                f"check the AWS profile {self.profile}{where} (~/.aws/credentials) and that the "
                "bucket policy allows this operation for its key"
            )
        return CREDENTIALS_HINT


@dataclass(frozen=True)
class S3Location:
    """A parsed `s3:` location. `endpoint_url` is None for AWS's own endpoints."""

    endpoint_url: str | None
    bucket: str
    prefix: str  # "" or "path/to/repo" (no leading or trailing slash)
    region: str | None = None  # from an `s3.<region>.amazonaws.com` host

    @property
    def display(self) -> str:
        base = self.endpoint_url or (
            f"s3.{self.region}.amazonaws.com" if self.region else "s3.amazonaws.com"
        )
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"s3:{base}/{path}"


_LOCATION_HINT = (
    "write s3:https://HOST[:PORT]/BUCKET[/PREFIX] or s3:s3.amazonaws.com/BUCKET[/PREFIX]"
)


def _split_location(location: str) -> tuple[str, str, str]:
    """(scheme, netloc, path) of restic's `s3:` forms; UsageError on anything else."""
    if not location.startswith("s3:"):
        raise UsageError(f"not an s3 location: {location!r}")
    rest = location[len("s3:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if "://" not in rest:
        netloc, _, path = rest.partition("/")
        return "https", netloc, "/" + path
    split = urlsplit(rest)
    if split.scheme not in ("http", "https"):
        raise UsageError(
            f"unsupported scheme {split.scheme!r} in an s3 location", hint=_LOCATION_HINT
        )
    if split.query or split.fragment:
        raise UsageError("an s3 location takes no ?query or #fragment", hint=_LOCATION_HINT)
    return split.scheme, split.netloc, split.path


def location_without_credentials(location: str) -> str | None:
    """For `s3:https://KEY:SECRET@host/bucket`, the same location without them; None when it
    holds none (or is not an s3 location at all). Never raises: `plan check` shows the fix."""
    try:
        scheme, netloc, path = _split_location(location)
    except (UsageError, ValueError):
        return None
    if "@" not in netloc:
        return None
    return f"s3:{scheme}://{netloc.rpartition('@')[2]}{path}"


def parse_s3_location(location: str) -> S3Location:
    """Parse restic's `s3:` forms (see the module doc); UsageError on anything else."""
    hint = _LOCATION_HINT
    scheme, netloc, path = _split_location(location)
    if "@" in netloc:
        # Never echo the location: it may hold a secret.
        raise UsageError(
            "an s3 location must not contain credentials",
            hint="put them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use AWS_PROFILE)",
        )
    if not netloc:
        raise UsageError("the s3 location names no host", hint=hint)
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise UsageError(f"the s3 location {location} names no bucket", hint=hint)
    bucket, prefix = parts[0], "/".join(parts[1:])
    if not _BUCKET_RE.match(bucket):
        raise UsageError(f"{bucket!r} is not a valid bucket name", hint=hint)
    if any(part in (".", "..") for part in parts[1:]):
        raise UsageError("the s3 prefix must not contain . or .. parts", hint=hint)
    aws = _AWS_HOST_RE.match(netloc.lower())
    if aws and scheme == "https":
        region = aws.group(1)
        if region in (None, "external-1"):
            region = None
        return S3Location(None, bucket, prefix, region)
    return S3Location(f"{scheme}://{netloc}", bucket, prefix)


class S3RequestError(BackendError):
    """An S3 request failed with an error code not mapped to a more specific error."""

    def __init__(self, message: str, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.code = code


class BucketNotFoundError(BackendError):
    default_hint = (
        "check the bucket name in the repository location, or create the repository with "
        "`safehold init`"
    )


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Backend:
    def __init__(
        self,
        location: S3Location | str,
        *,
        lock_retention: tuple[LockMode, float] | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int | None = None,
        credentials: tuple[str, str] | None = None,
        login: S3Login | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 120,
    ) -> None:
        """`login` (or, shorter, `credentials`: access key and secret) replaces boto3's default
        chain; a login's endpoint replaces the location's. `max_attempts` defaults to
        AWS_MAX_ATTEMPTS or 8."""
        self.loc = parse_s3_location(location) if isinstance(location, str) else location
        if login is None and credentials is not None:
            login = S3Login(credentials[0], credentials[1])
        self.login = login or S3Login()
        if self.login.endpoint:
            self.loc = replace(self.loc, endpoint_url=self.login.endpoint.rstrip("/"))
        if lock_retention is not None:
            mode, days = lock_retention
            if mode not in ("GOVERNANCE", "COMPLIANCE"):
                raise UsageError(f"object lock mode must be GOVERNANCE or COMPLIANCE, not {mode!r}")
            if days <= 0:
                raise UsageError("object lock retention must be a positive number of days")
        self.lock_retention = lock_retention
        self.multipart_threshold = multipart_threshold
        self.part_size = max(part_size, MIN_PART_SIZE)
        if max_attempts is None:
            max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        self.max_attempts = max(1, max_attempts)
        self._timeouts = (connect_timeout, read_timeout)
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self._created = False
        self._bucket_lock: BucketLock | None = None
        self._written: dict[str, tuple[LockMode, datetime]] = {}  # retention set by put()
        self._written_lock = threading.Lock()

    # ----- plumbing ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self.loc.display

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(object_lock=self.lock_retention is not None, forkable=True)

    def after_fork(self) -> None:
        """A client of its own on the next call: boto3 clients and their connection pools
        must not be shared across a fork (the loaded service models, module state, are).
        The parent's client is kept, unused: freeing it here would close its pool's
        connections, which are the parent's sockets too."""
        self._parents_client = self._client
        self._client = None
        self._client_lock = threading.Lock()
        self._written_lock = threading.Lock()

    def cleanup_temp_files(self) -> int:
        """Nothing to remove: a put is atomic, a failed multipart upload is aborted."""
        return 0

    @property
    def bucket(self) -> str:
        return self.loc.bucket

    @property
    def region(self) -> str:
        return (
            self.login.region
            or os.environ.get("AWS_DEFAULT_REGION")
            or self.loc.region
            or "us-east-1"
        )

    @property
    def client(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ProfileNotFound

        login = self.login
        try:
            session = boto3.session.Session(
                aws_access_key_id=login.access_key_id if login.has_keys else None,
                aws_secret_access_key=login.secret_access_key if login.has_keys else None,
                profile_name=login.profile if not login.has_keys else None,
            )
        except ProfileNotFound:
            where = f" (from {login.origin})" if login.origin else ""
            raise BackendPermissionError(
                f"the AWS profile {login.profile}{where} is not configured on this machine",
                hint="add it to ~/.aws/credentials (or ~/.aws/config), or give the destination "
                "access_key_id and secret_access_key",
            ) from None
        region = (
            login.region
            or os.environ.get("AWS_DEFAULT_REGION")
            or self.loc.region
            or session.region_name
            or "us-east-1"
        )
        config = Config(
            region_name=region,
            s3={"addressing_style": "path" if self.loc.endpoint_url else "auto"},
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            max_pool_connections=32,
        )
        return session.client("s3", endpoint_url=self.loc.endpoint_url, config=config)

    def _key(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"invalid object name {name!r}")
        return f"{self.loc.prefix}/{name}" if self.loc.prefix else name

    @property
    def _key_prefix(self) -> str:
        return f"{self.loc.prefix}/" if self.loc.prefix else ""

    def _translate(self, err: Exception, op: str, name: str | None) -> BackendError:
        """Map a botocore exception to safehold's errors (messages name no credentials)."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        what = f"{name} in {self.location}" if name else self.location
        if isinstance(err, NoCredentialsError | PartialCredentialsError):
            return BackendPermissionError(
                f"no usable AWS credentials for {op} of {what}",
                hint="give the destination access_key_id and secret_access_key (or a profile), "
                "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            )
        if isinstance(err, EndpointConnectionError | ConnectTimeoutError):
            endpoint = self.loc.endpoint_url or "the AWS S3 endpoint"
            return BackendError(f"cannot reach {endpoint} ({op} of {what})", hint=UNREACHABLE_HINT)
        if isinstance(err, ReadTimeoutError | ConnectionClosedError):
            return BackendError(
                f"the connection to the S3 server failed during {op} of {what}",
                hint="check the network and retry; the repository is intact",
            )
        if isinstance(err, ClientError):
            code = _error_code(err)
            if code in _NOT_FOUND_CODES and name is not None:
                return ObjectNotFoundError(f"{name} not found in {self.location}")
            if code == "NoSuchBucket" or (code in _NOT_FOUND_CODES and name is None):
                return BucketNotFoundError(f"bucket {self.bucket} does not exist ({op} of {what})")
            if code in _DENIED_CODES:
                detail = "" if code in ("403", "Forbidden") else f" ({code})"
                return BackendPermissionError(
                    f"S3 denied {op} of {what}{detail}", hint=self.login.hint()
                )
            if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout") or (
                code.isdigit() and int(code) >= 500
            ):
                return S3RequestError(
                    f"the S3 server kept failing {op} of {what} ({code})",
                    code,
                    hint="the server is overloaded or failing; retry later",
                )
            message = str(err.response.get("Error", {}).get("Message", "")) or code
            return S3RequestError(f"S3 {op} of {what} failed: {code}: {message}", code)
        return BackendError(f"S3 {op} of {what} failed: {type(err).__name__}: {err}")

    def _call(self, op: str, name: str | None, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, op, name) from None

    def _read_body(self, op: str, name: str, request: Callable[[], dict[str, Any]]) -> bytes:
        """Run a GetObject and read its body, again from the start when the connection drops
        mid-body (botocore retries only until the response headers have arrived)."""
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from urllib3.exceptions import ProtocolError

        attempt = 0
        while True:
            response = self._call(op, name, request)
            try:
                return cast(bytes, response["Body"].read())
            except (
                IncompleteReadError, ResponseStreamingError, ReadTimeoutError,
                ConnectionClosedError, ProtocolError, ConnectionError,
            ) as err:  # fmt: skip
                attempt += 1
                if attempt >= BODY_READ_ATTEMPTS:
                    raise BackendError(
                        f"the connection to the S3 server kept dropping while reading "
                        f"{name} in {self.location} ({type(err).__name__})",
                        hint="check the network and retry; the repository is intact",
                    ) from None
                time.sleep(min(BODY_RETRY_DELAY * 2**attempt, 5))

    # ----- the Backend interface --------------------------------------------------------------

    def _lock_args(self, name: str) -> dict[str, Any]:
        if name.startswith(LOCKS_DIR):
            return self._lock_file_args()
        if self.lock_retention is None:
            return {}
        mode, days = self.lock_retention
        until = datetime.now(UTC) + timedelta(days=days) + lock_slack(days)
        return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}

    def _lock_file_args(self) -> dict[str, Any]:
        """An explicit short retention for lock files where the bucket's default retention
        would otherwise lock them for days (or where that default cannot be read)."""
        bucket = self.bucket_lock()
        if not bucket.enabled or (bucket.known and bucket.default_mode is None):
            return {}
        until = datetime.now(UTC) + LOCK_FILE_RETENTION
        return {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until}

    def bucket_lock(self) -> BucketLock:
        """The bucket's Object Lock setting (read once per backend)."""
        if self._bucket_lock is None:
            self._bucket_lock = self._read_bucket_lock()
        return self._bucket_lock

    def _read_bucket_lock(self) -> BucketLock:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as err:
            code = _error_code(err)
            if code in _NO_RETENTION_CODES:
                return BucketLock(False)
            if code == "NoSuchBucket":
                return BucketLock(False)
            # a login that may not read the setting: lock files get the explicit retention
            # (retried without it when the bucket has no Object Lock at all)
            return BucketLock(True, known=False)
        except BotoCoreError:
            return BucketLock(True, known=False)
        setting = config.get("ObjectLockConfiguration", {})
        if setting.get("ObjectLockEnabled") != "Enabled":
            return BucketLock(False)
        default = setting.get("Rule", {}).get("DefaultRetention", {})
        mode = default.get("Mode")
        if mode not in ("GOVERNANCE", "COMPLIANCE"):
            return BucketLock(True)
        days = float(default.get("Days") or 0) or float(default.get("Years") or 0) * 365
        return BucketLock(True, mode, days)

    def written_retention(self) -> dict[str, tuple[LockMode, datetime]]:
        """The retention put() gave the objects it wrote (name -> mode, retain-until)."""
        with self._written_lock:
            return dict(self._written)

    def _put_refused(self, err: BackendError, name: str) -> BackendError:
        if (
            self.lock_retention
            and not name.startswith(LOCKS_DIR)
            and isinstance(err, S3RequestError)
            and err.code == "InvalidRequest"
        ):
            return BackendError(
                f"{self.location}: the bucket refused object lock retention on {name}",
                hint=f"create bucket {self.bucket} with Object Lock enabled "
                "(it cannot be turned on for most existing buckets), or drop the "
                "retention setting",
            )
        return err

    def put(self, name: str, data: ObjectData) -> None:
        key = self._key(name)
        if isinstance(data, bytes | bytearray | memoryview):
            pieces: Sequence[bytes] = [bytes(data)]
        else:
            pieces = data
        size = sum(len(piece) for piece in pieces)
        extra = self._lock_args(name)
        try:
            self._put_object(name, key, pieces, size, extra)
        except S3RequestError as err:
            if not (name.startswith(LOCKS_DIR) and extra and err.code == "InvalidRequest"):
                raise self._put_refused(err, name) from None
            # the bucket has no Object Lock after all (its setting could not be read), or
            # refuses the short date: write the lock file as restic does
            self._bucket_lock = BucketLock(False, known=False)
            extra = {}
            self._put_object(name, key, pieces, size, extra)
        except BackendError as err:
            raise self._put_refused(err, name) from None
        if extra and not name.startswith(LOCKS_DIR):
            with self._written_lock:
                self._written[name] = (
                    extra["ObjectLockMode"],
                    extra["ObjectLockRetainUntilDate"],
                )

    def _put_object(
        self, name: str, key: str, pieces: Sequence[bytes], size: int, extra: dict[str, Any]
    ) -> None:
        if size <= self.multipart_threshold:
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self._call(
                "upload",
                name,
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=bytes(body), **extra
                ),
            )
        else:
            self._put_multipart(name, key, pieces, extra)

    def _parts(self, pieces: Sequence[bytes]) -> Iterator[bytes]:
        """Cut the pieces into parts of `part_size` bytes (the last may be shorter)."""
        buffer = bytearray()
        for piece in pieces:
            view = memoryview(piece)
            while view:
                take = min(len(view), self.part_size - len(buffer))
                buffer += view[:take]
                view = view[take:]
                if len(buffer) == self.part_size:
                    yield bytes(buffer)
                    buffer.clear()
        if buffer:
            yield bytes(buffer)

    def _put_multipart(
        self, name: str, key: str, pieces: Sequence[bytes], extra: dict[str, Any]
    ) -> None:
        created = self._call(
            "upload",
            name,
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra),
        )
        upload_id = created["UploadId"]
        try:
            done: list[Any] = []
            for number, part in enumerate(self._parts(pieces), start=1):
                upload_part = functools.partial(
                    self.client.upload_part,
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part,
                )  # fmt: skip
                result = cast(dict[str, Any], self._call("upload", name, upload_part))
                entry: dict[str, Any] = {"PartNumber": number, "ETag": result["ETag"]}
                for field in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256"):
                    if result.get(field):
                        entry[field] = result[field]
                done.append(entry)
            complete = functools.partial(
                self.client.complete_multipart_upload,
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done},
            )  # fmt: skip
            self._call("upload", name, complete)
        except BaseException:
            from botocore.exceptions import BotoCoreError, ClientError

            # the first error is the one to report; a lifecycle rule can clean up the rest
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def get(self, name: str) -> bytes:
        key = self._key(name)
        return self._read_body(
            "download",
            name,
            lambda: cast(dict[str, Any], self.client.get_object(Bucket=self.bucket, Key=key)),
        )

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        key = self._key(name)
        if length == 0:
            self.stat(name)  # a missing object is still an error
            return b""
        byte_range = f"bytes={offset}-{offset + length - 1}"
        try:
            return self._read_body(
                "download",
                name,
                lambda: cast(
                    dict[str, Any],
                    self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range),
                ),
            )[:length]
        except S3RequestError as err:
            if err.code == "InvalidRange":  # starts at or past the end
                return b""
            raise

    def list(self, prefix: str) -> Iterator[FileInfo]:
        base = self._key_prefix
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=base + prefix)
        iterator = iter(pages)
        while True:
            page = self._call("list", prefix or "all objects", lambda: next(iterator, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.startswith(base) and not key.endswith("/"):
                    yield FileInfo(key[len(base) :], int(item["Size"]))

    def delete(self, name: str) -> None:
        """Delete the object's current version (in a versioned or Object Lock bucket too: a
        plain DeleteObject would only hide it behind a delete marker and free nothing)."""
        key = self._key(name)
        try:
            head = self._call(
                "delete", name, lambda: self.client.head_object(Bucket=self.bucket, Key=key)
            )
        except ObjectNotFoundError:
            return
        version = head.get("VersionId")
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version and version != "null":
            args["VersionId"] = version
        try:
            self._call("delete", name, lambda: self.client.delete_object(**args))
        except ObjectNotFoundError:
            return
        except BackendPermissionError:
            until = head.get("ObjectLockRetainUntilDate")
            mode = head.get("ObjectLockMode")
            if until is None:
                try:
                    until = self.retention_until(name)
                except BackendError:
                    until = None
            if until is not None and until > datetime.now(UTC) and name.startswith(LOCKS_DIR):
                self._delete_locked_lock_file(name, args, mode, until)
                return
            if until is not None and until > datetime.now(UTC):
                raise ObjectLockedError(
                    f"{name} in {self.location} is locked until "
                    f"{until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC "
                    f"(S3 Object Lock{' ' + mode if mode else ''}); the server refused to "
                    "delete it",
                    hint="it can be deleted after that date: prune again then",
                ) from None
            if head.get("ObjectLockLegalHoldStatus") == "ON":
                raise BackendPermissionError(
                    f"{name} in {self.location} is under an S3 legal hold; the server "
                    "refused to delete it",
                    hint="remove the legal hold first, if that is intended",
                ) from None
            if name.startswith(LOCKS_DIR):
                return  # a write-only key (no DeleteObject on locks/): the lock goes stale
            raise DeleteRefusedError(
                f"S3 denied delete of {name} in {self.location}",
                hint="these credentials may not delete (a write-only backup key?): run forget "
                "and prune with the maintenance credentials, whose policy allows "
                "s3:DeleteObject and s3:DeleteObjectVersion",
            ) from None

    def _delete_locked_lock_file(
        self, name: str, args: dict[str, Any], mode: str | None, until: datetime
    ) -> None:
        """A lock file under retention (the bucket's default, or our own few seconds): with
        GOVERNANCE try a bypass; a retention that ends within LOCK_FILE_WAIT is waited out;
        else the lock is left to go stale, with a warning (never a failed command)."""
        if mode == "GOVERNANCE":
            with contextlib.suppress(BackendPermissionError):
                self._call(
                    "delete",
                    name,
                    lambda: self.client.delete_object(**args, BypassGovernanceRetention=True),
                )
                return
        wait = (until - datetime.now(UTC)).total_seconds()
        if wait <= LOCK_FILE_WAIT.total_seconds():
            time.sleep(max(0.0, wait) + 1.0)
            with contextlib.suppress(BackendPermissionError):
                self._call("delete", name, lambda: self.client.delete_object(**args))
                return
        warnings.warn(
            SafeholdWarning(
                f"{name} in {self.location} is locked until "
                f"{until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by the bucket's Object Lock, "
                "so it cannot be deleted; it is left to go stale (other runs ignore it after "
                "30 minutes)"
            ),
            stacklevel=2,
        )

    def object_retention(self, name: str) -> tuple[LockMode, datetime] | None:
        """The object's Object Lock mode and retain-until date, None if it has none."""
        mode, until = self._read_retention(name)
        if mode is None or until is None:
            return None
        return mode, until

    def _read_retention(self, name: str) -> tuple[LockMode | None, datetime | None]:
        """GetObjectRetention's mode and date (either may be missing); (None, None) for an
        object without retention. A server without GetObjectRetention: HeadObject's."""
        key = self._key(name)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object_retention(Bucket=self.bucket, Key=key)
        except ClientError as err:
            code = _error_code(err)
            if code in _NO_RETENTION_CODES:
                return None, None
            if (code.isdigit() and int(code) >= 500) or code == "NotImplemented":
                head = self._call(
                    "stat", name, lambda: self.client.head_object(Bucket=self.bucket, Key=key)
                )
                return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
            raise self._translate(err, "read retention", name) from None
        except BotoCoreError as err:
            raise self._translate(err, "read retention", name) from None
        retention = response.get("Retention", {})
        return retention.get("Mode"), retention.get("RetainUntilDate")

    def extend_retention(self, name: str, mode: LockMode, until: datetime) -> None:
        """Set the object's retention to `mode` until `until` (PutObjectRetention). The server
        refuses to shorten a retention, or to turn COMPLIANCE into GOVERNANCE."""
        key = self._key(name)
        retention: Any = {"Mode": mode, "RetainUntilDate": until}
        self._call(
            "extend retention",
            name,
            lambda: self.client.put_object_retention(
                Bucket=self.bucket, Key=key, Retention=retention
            ),
        )

    def stat(self, name: str) -> FileInfo:
        key = self._key(name)
        head = self._call(
            "stat", name, lambda: self.client.head_object(Bucket=self.bucket, Key=key)
        )
        return FileInfo(name, int(head["ContentLength"]))

    def retention_until(self, name: str) -> datetime | None:
        """When the object's Object Lock retention ends (GetObjectRetention), None if it has none.
        The date may lie in the past: then the object is deletable again."""
        return self._read_retention(name)[1]

    def _bucket_exists(self) -> bool:
        try:
            self._call("open", None, lambda: self.client.head_bucket(Bucket=self.bucket))
        except BucketNotFoundError:
            return False
        return True

    def _holds_anything(self, under: str) -> bool:
        response = self._call(
            "list",
            under or "all objects",
            lambda: self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self._key_prefix + under, MaxKeys=1
            ),
        )
        return bool(response.get("Contents"))

    def exists(self) -> bool:
        """The bucket is reachable, and the prefix holds something (or this backend created it).
        A bucket without a prefix exists as a location as soon as the bucket does."""
        if not self._bucket_exists():
            return False
        return not self.loc.prefix or self._created or self._holds_anything("")

    def create(self) -> None:
        """Create the bucket when missing (with Object Lock when a retention is set); refuse a
        location that already holds a repository."""
        if self._bucket_exists():
            if self._holds_anything("config") or self._holds_anything("keys/"):
                raise RepositoryExistsError(f"{self.location} already holds a repository")
            if self.lock_retention is not None:
                self._check_lock_enabled()
        else:
            args: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            if self.lock_retention is not None:
                args["ObjectLockEnabledForBucket"] = True
            try:
                self._call("create bucket", None, lambda: self.client.create_bucket(**args))
            except S3RequestError as err:
                if err.code != "BucketAlreadyOwnedByYou":
                    raise
        self._created = True

    def _check_lock_enabled(self) -> None:
        from botocore.exceptions import ClientError

        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as err:
            if _error_code(err) not in _NO_RETENTION_CODES:
                raise self._translate(err, "read the object lock setting", None) from None
            config = {}  # type: ignore[typeddict-item]
        enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise BackendError(
                f"bucket {self.bucket} has no Object Lock, but a retention is configured",
                hint="use a bucket created with Object Lock enabled, or drop the retention setting",
            )
