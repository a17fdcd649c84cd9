"""Webhooks: signed POSTs to a real receiver when jobs end, retries, filters and SSRF refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.settings import GatewaySettings
from contract.webhooks import Webhooks
from devstack.redis_server import free_port
from tests.conftest import WEBHOOK_SECRET, Stack
from tests.helpers import submit_and_wait

QUICK = {
    "prompt": "hook",
    "seed": 1,
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15", "steps": 2}],
}


class Receiver:
    """An HTTP server that records what it is sent; answers `fail_first` requests with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(503 if failing else 204)
                self.end_headers()

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


def signature_ok(delivery: dict[str, Any]) -> bool:
    expected = (
        "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), delivery["body"], hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(delivery["headers"]["X-Imagegen-Signature"], expected)


@pytest.mark.stack
def test_completed_job_posts_its_signed_envelope(stack: Stack, receiver: Receiver) -> None:
    with stack.client() as client:
        envelope = submit_and_wait(client, {**QUICK, "webhook_url": receiver.url})
    [delivery] = receiver.wait(1)
    assert signature_ok(delivery)
    assert delivery["headers"]["X-Imagegen-Event"] == "completed"
    posted = json.loads(delivery["body"])
    assert posted["id"] == envelope["id"]
    assert posted["status"] == "succeeded"
    assert posted["images"][0]["url"] == envelope["images"][0]["url"]


@pytest.mark.stack
def test_failed_and_canceled_jobs_post_and_filters_apply(stack: Stack, receiver: Receiver) -> None:
    with stack.client() as client:
        failed = submit_and_wait(
            client,
            {
                **QUICK,
                "stages": [{"model": "demo-broken"}],
                "webhook_url": receiver.url,
                "webhook_events": ["failed"],
            },
        )
        assert failed["status"] == "failed"
        # Only "failed" asked for: a success posts nothing.
        submit_and_wait(
            client, {**QUICK, "webhook_url": receiver.url, "webhook_events": ["failed"]}
        )
        queued = client.post(
            "/jobs",
            json={
                **QUICK,
                "stages": [{"model": "demo-sd15-unserved"}],
                "webhook_url": receiver.url,
            },
        ).json()
        client.post(f"/jobs/{queued['id']}/cancel")
    deliveries = receiver.wait(2)
    time.sleep(0.5)
    assert sorted(d["headers"]["X-Imagegen-Event"] for d in receiver.received) == [
        "canceled",
        "failed",
    ]
    assert all(signature_ok(d) for d in deliveries)


def test_delivery_is_retried_with_backoff() -> None:
    flaky = Receiver(fail_first=2)
    try:
        hooks = Webhooks(secret="s", allow_private=True, attempts=4, first_backoff_s=0.05)
        started = time.monotonic()
        assert hooks.deliver(flaky.url, b"{}", "completed")
        assert len(flaky.received) == 3
        assert time.monotonic() - started >= 0.05 + 0.1  # two waits, doubling
        ids = {d["headers"]["X-Imagegen-Delivery"] for d in flaky.received}
        assert len(ids) == 1  # one delivery, retried: the receiver can deduplicate
    finally:
        flaky.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://192.168.0.10/x",
        "ftp://example.com/x",
    ],
)
def test_webhooks_to_private_addresses_are_refused(
    gateway_settings: GatewaySettings, url: str
) -> None:
    from app.main import create_app

    settings = gateway_settings.model_copy(update={"webhook_secret": "s"})
    with TestClient(create_app(settings)) as client:
        response = client.post("/jobs", json={**QUICK, "webhook_url": url})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][-1] == "webhook_url"


def test_webhooks_need_a_secret(client: TestClient) -> None:
    response = client.post("/jobs", json={**QUICK, "webhook_url": "https://example.com/hook"})
    assert response.status_code == 422
    assert "IMAGEGEN_WEBHOOK_SECRET" in response.json()["detail"][0]["msg"]
