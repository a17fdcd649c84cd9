"""Webhooks from a running stack: signed POSTs when jobs end, with event filters."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Stack
from tests.helpers import submit_and_wait
from tests.receiver import Receiver, receiver, signature_ok

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
