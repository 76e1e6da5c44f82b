"""A connection that drops in the middle of an upload: the S3 backend retries, the backup
completes, and what it stored restores bit-exact. A loopback proxy in front of the real S3
server cuts client connections after a number of bytes, a few times."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from pathlib import Path

from tests.conftest import RunCli
from tests.s3server import SeaweedServer


class _DroppingProxy:
    """Forwards TCP to the S3 server; the first `drops` connections that carry more than
    `after` bytes from the client are cut mid-request."""

    def __init__(self, upstream_port: int, after: int, drops: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._after = after
        self.drops_left = drops
        self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._upstream)
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                sent += len(data)
                if count and sent > self._after:
                    with self._lock:
                        drop = self.drops_left > 0
                        if drop:
                            self.drops_left -= 1
                            self.dropped += 1
                    if drop:
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self._server.close()


def test_backup_survives_dropped_uploads(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for number in range(6):
        (source / f"f{number}.bin").write_bytes(hashlib.sha256(bytes([number])).digest() * 80_000)
    proxy = _DroppingProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), after=3_000_000, drops=3)
    try:
        repo = f"s3:http://127.0.0.1:{proxy.port}/{s3_server.bucket_name('drop')}/repo"
        env = {"AWS_ACCESS_KEY_ID": s3_server.access_key,
               "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}  # fmt: skip
        assert run_cli("-r", repo, "init", env=env).returncode == 0
        backup = run_cli("-r", repo, "backup", str(source), "--compression", "off", env=env)
        assert backup.returncode == 0, backup.stderr
        assert proxy.dropped >= 1  # the uploads really were cut, and retried
        restored = tmp_path / "restored"
        result = run_cli("-r", repo, "restore", "latest", "--target", str(restored), env=env)
        assert result.returncode == 0, result.stderr
        for original in source.iterdir():
            copy = restored / str(source).lstrip("/") / original.name
            assert copy.read_bytes() == original.read_bytes()
        check = run_cli("-r", repo, "check", "--read-data", env=env)
        assert check.returncode == 0 and "no errors were found" in check.stdout
    finally:
        proxy.close()
