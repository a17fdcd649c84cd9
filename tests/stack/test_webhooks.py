"""Webhooks from a running stack: signed POSTs when jobs end, with event filters, retried by
the webhook worker, and surviving a kill -9 of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.helpers import submit_and_wait
from tests.receiver import Receiver, receiver, signature_ok
from workers.healthcheck import webhook_worker_alive

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]
__all__ = ["receiver"]

QUICK = {
    "prompt": "hook",
    "seed": 1,
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15", "steps": 2}],
}


def test_completed_job_posts_its_signed_envelope(stack: Stack, receiver: Receiver) -> None:
    with stack.client() as client:
        envelope = submit_and_wait(client, {**QUICK, "webhook_url": receiver.url})
    [delivery] = receiver.wait(1)
    assert signature_ok(delivery)
    assert delivery["headers"]["X-Imagegen-Event"] == "completed"
    assert delivery["headers"]["webhook-id"] == f"msg_{envelope['id']}"
    posted = json.loads(delivery["body"])
    assert posted["id"] == envelope["id"]
    assert posted["status"] == "succeeded"
    assert posted["images"][0]["url"] == envelope["images"][0]["url"]


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


def test_a_receiver_failing_twice_sees_three_attempts_of_one_notification(stack: Stack) -> None:
    flaky = Receiver(fail_first=2)
    try:
        with stack.client() as client:
            envelope = submit_and_wait(client, {**QUICK, "webhook_url": flaky.url})
            attempts = flaky.wait(3)
            assert [d["headers"]["webhook-id"] for d in attempts] == [f"msg_{envelope['id']}"] * 3
            assert all(signature_ok(d) for d in attempts)
            webhook = wait_for_webhook(client, envelope["id"])
        assert (webhook["state"], webhook["attempts"], webhook["last_status"]) == (
            "delivered",
            3,
            204,
        )
    finally:
        flaky.close()


def test_a_webhook_survives_a_kill_of_the_worker_delivering_it(stack: Stack) -> None:
    # The receiver holds the first attempt; the webhook worker is killed meanwhile. A new one
    # runs the attempt again (RQ's crash recovery), and the receiver sees it with the same id.
    holding = Receiver(hold_first_s=30)
    try:
        with stack.client() as client:
            envelope = submit_and_wait(client, {**QUICK, "webhook_url": holding.url})
            holding.wait(1)
            assert stack.webhooks is not None
            os.kill(stack.webhooks.pid, signal.SIGKILL)
            stack.webhooks.wait()
            stack.start_webhook_worker()
            webhook = wait_for_webhook(client, envelope["id"], timeout=60)
        assert len(holding.received) == 2, webhook
        first_attempt, retry = holding.received
        assert retry["headers"]["webhook-id"] == first_attempt["headers"]["webhook-id"]
        assert signature_ok(retry)
        assert (webhook["state"], webhook["attempts"]) == ("delivered", 2)
        time.sleep(1)
        assert len(holding.received) == 2  # delivered once the retry succeeded, not again
    finally:
        holding.close()


def test_the_webhook_worker_passes_its_health_check(stack: Stack) -> None:
    assert webhook_worker_alive(stack.redis)
    assert stack.webhooks is not None
    check = [sys.executable, "-m", "workers.healthcheck", "--webhooks"]
    done = subprocess.run(check, env={**os.environ, **stack.env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def wait_for_webhook(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The job's webhook record once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        webhook = client.get(f"/jobs/{job_id}").json()["webhook"]
        if webhook is not None and webhook["state"] != "pending":
            return dict(webhook)
        time.sleep(0.1)
    raise AssertionError(f"the webhook is still pending after {timeout} s: {webhook}")
