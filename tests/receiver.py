"""A webhook receiver on 127.0.0.1 that records what it is sent (tests never post elsewhere)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devstack.redis_server import free_port

WEBHOOK_SECRET = "test-webhook-secret"


class Receiver:
    """An HTTP server that records what it is sent (and when); answers the first `fail_first`
    requests with `failure` (and `failure_headers`), holds the first request `hold_first_s`
    seconds and every request `hold_s`."""

    def __init__(
        self,
        fail_first: int = 0,
        hold_first_s: float = 0,
        failure: int = 503,
        failure_headers: dict[str, str] | None = None,
        hold_s: float = 0,
    ) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.hold_first_s = hold_first_s
        self.failure = failure
        self.failure_headers = failure_headers or {}
        self.hold_s = hold_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                delivery = {"headers": dict(self.headers), "body": body, "at": time.time()}
                receiver.received.append(delivery)
                if len(receiver.received) == 1:
                    time.sleep(receiver.hold_first_s)
                time.sleep(receiver.hold_s)
                failing = len(receiver.received) <= receiver.fail_first
                try:
                    self.send_response(receiver.failure if failing else 204)
                    for name, value in (receiver.failure_headers if failing else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone (the kill test kills it mid-request)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def signature_ok(delivery: dict[str, Any], secret: str = WEBHOOK_SECRET) -> bool:
    """Standard Webhooks: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    headers = delivery["headers"]
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery["body"]
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return hmac.compare_digest(headers["webhook-signature"], expected)
