"""Real receivers on loopback for alert tests: an HTTP server that records every request
(apprise json://, form://, pings) and an SMTP server (aiosmtpd) that records every mail."""

from __future__ import annotations

import json
import queue
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}


@dataclass
class HttpReceiver:
    port: int
    requests: queue.Queue[Request] = field(default_factory=queue.Queue)
    status: int = 200  # what the receiver answers; set 500 to refuse deliveries

    def url(self, path: str = "/hooks/alerts", scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def next(self, timeout: float = 10) -> Request:
        return self.requests.get(timeout=timeout)

    def drain(self) -> list[Request]:
        items: list[Request] = []
        while True:
            try:
                items.append(self.requests.get_nowait())
            except queue.Empty:
                return items


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    holder: list[HttpReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            receiver = holder[0]
            receiver.requests.put(
                Request(self.command, self.path, self.headers.get("Content-Type", ""), body)
            )
            self.send_response(receiver.status)
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = _handle
        do_GET = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(HttpReceiver(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message


@dataclass
class SmtpReceiver:
    port: int
    mails: queue.Queue[Mail] = field(default_factory=queue.Queue)

    def url(self, to: str = "ops@example.test") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=backup@example.test&to={to}&mode=insecure"

    def next(self, timeout: float = 10) -> Mail:
        return self.mails.get(timeout=timeout)


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    from aiosmtpd.controller import Controller

    receiver = SmtpReceiver(free_port())

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            message = message_from_bytes(envelope.content)
            receiver.mails.put(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
            return "250 OK"

    # Controller needs a real port (it connects to itself to confirm it started).
    controller = Controller(Sink(), hostname="127.0.0.1", port=receiver.port)
    controller.start()
    yield receiver
    controller.stop()


def closed_port_url(scheme: str = "json") -> str:
    """A URL nobody listens on: deliveries there fail at once."""
    return f"{scheme}://127.0.0.1:{free_port()}/nobody"
