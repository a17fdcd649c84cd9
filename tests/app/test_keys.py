"""API keys and isolation, per-key caps and idempotency, on a real Redis."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from tests.app.conftest import ALICE, BOB, ROOT, SPEC, auth, queued


def test_requests_without_a_valid_key_are_401(secured: TestClient) -> None:
    for headers in ({}, auth("wrong")):
        response = secured.post("/jobs", json=SPEC, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert secured.get("/models").status_code == 401
    assert secured.get("/healthz").status_code == 200


def test_a_job_is_visible_to_its_key_and_admins_only(secured: TestClient) -> None:
    job_id = secured.post("/jobs", json=SPEC, headers=auth(ALICE)).json()["id"]
    assert secured.get(f"/jobs/{job_id}", headers=auth(ALICE)).status_code == 200
    assert secured.get(f"/jobs/{job_id}", headers=auth(ROOT)).status_code == 200
    # Another key gets 404, as for a job that does not exist: nothing confirms it exists.
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/images/0", f"/jobs/{job_id}/events"):
        assert secured.get(path, headers=auth(BOB)).status_code == 404
    assert secured.post(f"/jobs/{job_id}/cancel", headers=auth(BOB)).status_code == 404
    assert secured.post(f"/jobs/{job_id}/cancel", headers=auth(ALICE)).status_code == 200


def test_over_the_per_key_cap_is_429_with_retry_after(secured: TestClient, redis: Redis) -> None:
    ids = [secured.post("/jobs", json=SPEC, headers=auth(ALICE)).json()["id"] for _ in range(3)]
    response = secured.post("/jobs", json=SPEC, headers=auth(ALICE))
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    [error] = response.json()["detail"]
    assert error["type"] == "queue_full"
    assert "3 unfinished jobs for this API key" in error["msg"]
    assert queued(redis) == 3
    # Another key still has room; a finished job frees its slot.
    assert secured.post("/jobs", json=SPEC, headers=auth(BOB)).status_code == 202
    secured.post(f"/jobs/{ids[0]}/cancel", headers=auth(ALICE))
    assert secured.post("/jobs", json=SPEC, headers=auth(ALICE)).status_code == 202


def test_one_key_cannot_lock_the_others_out(secured: TestClient) -> None:
    # Total 5, 3 keys with 1 reserved slot each: 2 shared. Alice takes hers and both shared.
    for _ in range(3):
        assert secured.post("/jobs", json=SPEC, headers=auth(ALICE)).status_code == 202
    assert secured.post("/jobs", json=SPEC, headers=auth(BOB)).status_code == 202
    response = secured.post("/jobs", json=SPEC, headers=auth(BOB))  # nothing shared is left
    assert response.status_code == 429
    assert "reserved slots and all 2 shared ones" in response.json()["detail"][0]["msg"]
    assert secured.post("/jobs", json=SPEC, headers=auth(ROOT)).status_code == 202
    response = secured.post("/jobs", json=SPEC, headers=auth(ROOT))
    assert response.status_code == 429
    assert "5 unfinished jobs on this deployment" in response.json()["detail"][0]["msg"]


def test_idempotency_key_returns_the_same_job(secured: TestClient, redis: Redis) -> None:
    headers = {**auth(ALICE), "Idempotency-Key": "order-42"}
    first = secured.post("/jobs", json=SPEC, headers=headers)
    again = secured.post("/jobs", json=SPEC, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert queued(redis) == 1
    other = secured.post("/jobs", json={**SPEC, "prompt": "something else"}, headers=headers)
    assert other.status_code == 409
    # Keys are per API key: bob's "order-42" is his own.
    assert (
        secured.post(
            "/jobs", json=SPEC, headers={**auth(BOB), "Idempotency-Key": "order-42"}
        ).status_code
        == 202
    )


def test_concurrent_duplicates_create_exactly_one_job(secured: TestClient, redis: Redis) -> None:
    headers = {**auth(ROOT), "Idempotency-Key": "burst-1"}
    results: list[Any] = []
    barrier = threading.Barrier(12)

    def post() -> None:
        barrier.wait()
        response = secured.post("/jobs", json=SPEC, headers=headers)
        results.append((response.status_code, response.json()["id"]))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({job_id for _, job_id in results}) == 1
    assert sorted(code for code, _ in results) == [200] * 11 + [202]
    assert queued(redis) == 1
