"""Admission: the checks a job passes before it is stored and queued."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import GatewaySettings
from contract.spec import JobSpec
from jobs.idempotency import Idempotency
from tests.app.conftest import queued

QUICK = {
    "prompt": "hook",
    "seed": 1,
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15", "steps": 2}],
}


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


def test_a_claim_whose_job_never_appeared_is_409_in_flight_not_500(
    client: TestClient, redis: Redis
) -> None:
    # The gateway that claimed this key died before storing its job.
    body = JobSpec.model_validate(QUICK).model_dump_json().encode()
    keys = Idempotency(redis, ttl_s=60)
    claim = keys.claim("anonymous", "retry-me", body)
    assert keys.take(claim, "job-that-never-was") is None
    response = client.post("/jobs", json=QUICK, headers={"Idempotency-Key": "retry-me"})
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    [error] = response.json()["detail"]
    assert error["type"] == "idempotency_in_flight"
    # Once the short claim lapses, the same retry creates the job.
    redis.delete(claim.redis_key)
    retried = client.post("/jobs", json=QUICK, headers={"Idempotency-Key": "retry-me"})
    assert retried.status_code == 202
    again = client.post("/jobs", json=QUICK, headers={"Idempotency-Key": "retry-me"})
    assert (again.status_code, again.json()["id"]) == (200, retried.json()["id"])


def test_a_job_no_replica_confirms_is_withdrawn_and_answered_503_not_replicated(
    gateway_settings: GatewaySettings, redis: Redis
) -> None:
    # The test's Redis has no replica: WAIT counts none, as when the only one is down.
    settings = gateway_settings.model_copy(
        update={"redis_min_replicas": 1, "redis_replica_wait_ms": 50}
    )
    with TestClient(create_app(settings)) as client:
        first = client.post("/jobs", json=QUICK, headers={"Idempotency-Key": "k1"})
        again = client.post("/jobs", json=QUICK, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 503, first.text
    assert first.headers["Retry-After"] == "1"
    [error] = first.json()["detail"]
    assert error["type"] == "not_replicated"
    assert "submit it again" in error["msg"]
    # Nothing will run: the RQ queue is empty and the record ended canceled.
    assert queued(redis) == 0
    records = [k for k in redis.scan_iter("imagegen:job:*") if k.count(b":") == 2]
    assert sorted(redis.hget(k, "status") for k in records) == [b"canceled"] * 2
    # The key was given back: the retry was admitted anew (and withdrawn again), not 409; and
    # neither holds a slot of the key's queue cap.
    assert again.status_code == 503, again.text
    assert redis.zcard("imagegen:outstanding") == 0
