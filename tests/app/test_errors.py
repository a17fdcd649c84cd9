"""The error table: every failure answers one JSON shape with a machine type, from one place;
Redis down is a 503 with Retry-After, and no traceback reaches a client."""

from __future__ import annotations

import json
import uuid
from typing import Any, get_args

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import Redis

from app import errors
from app.errors import ERRORS, ErrorBody, FailedJobType
from app.main import create_app
from app.settings import GatewaySettings
from contract.envelope import FailureType
from jobs.queues import pool_queue

SPEC = {
    "prompt": "a lighthouse",
    "width": 256,
    "height": 256,
    "stages": [{"model": "demo-sd15", "steps": 4}],
}


def body_of(response: Any) -> ErrorBody:
    return ErrorBody.model_validate(response.json())


def test_redis_down_is_503_with_retry_after(gateway_settings: GatewaySettings) -> None:
    dead = gateway_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead), raise_server_exceptions=False) as offline:
        for response in (
            offline.post("/jobs", json=SPEC),
            offline.get(f"/jobs/{uuid.uuid4()}"),
            offline.post(f"/jobs/{uuid.uuid4()}/cancel"),
        ):
            assert response.status_code == 503
            assert response.headers["retry-after"]
            [item] = body_of(response).detail
            assert item.type == "store_unavailable"
            assert "Redis" in item.msg
            assert "Error 111" not in item.msg  # the library's words stay in the log


@pytest.mark.parametrize(
    ("call", "status", "type_"),
    [
        (lambda c: c.get(f"/jobs/{uuid.uuid4()}"), 404, "job_not_found"),
        (lambda c: c.post(f"/jobs/{uuid.uuid4()}/cancel"), 404, "job_not_found"),
        (lambda c: c.get("/no-such-route"), 404, "not_found"),
        (lambda c: c.delete("/jobs"), 405, "method_not_allowed"),
        (lambda c: c.get("/jobs/not-a-uuid"), 422, "uuid_parsing"),
    ],
)
def test_every_error_has_one_shape_and_a_machine_type(
    client: TestClient, call: Any, status: int, type_: str
) -> None:
    response = call(client)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    [item] = body_of(response).detail
    assert item.type == type_
    assert item.msg


def test_an_image_of_a_job_that_has_none_is_404_naming_the_index(client: TestClient) -> None:
    job_id = client.post("/jobs", json=SPEC).json()["id"]
    response = client.get(f"/jobs/{job_id}/images/3")
    assert response.status_code == 404
    [item] = body_of(response).detail
    assert (item.type, item.loc) == ("image_not_found", ["path", "index"])


def test_an_unexpected_exception_is_a_500_without_its_text(
    gateway_settings: GatewaySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    app: FastAPI = create_app(gateway_settings)

    @app.get("/boom/{job_id}")
    def boom(job_id: str) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom/42")
    assert response.status_code == 500
    [item] = body_of(response).detail
    assert item.type == "internal_error"
    assert "secret" not in response.text
    # The log line is JSON and says where, as every other line does.
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [line] = [line for line in lines if line["msg"] == "unhandled error"]
    assert (line["method"], line["route"], line["job_id"]) == ("GET", "/boom/{job_id}", "42")
    assert "RuntimeError" in line["exc"]


def test_every_mapped_error_is_a_client_error_or_unavailable() -> None:
    # Nothing the table maps is the server's fault: 4xx for the client, 503 for Redis, 501 for
    # an A1111 route this service has no counterpart of.
    assert {kind.status // 100 for kind in ERRORS.values()} <= {4, 5}
    assert all(kind.status in (501, 503) for kind in ERRORS.values() if kind.status >= 500)
    assert all(kind.retry_after_s for kind in ERRORS.values() if kind.status in (429, 503))


def test_documented_errors_are_the_error_body() -> None:
    documented = errors.documented(404, 503)
    assert documented[404]["model"] is ErrorBody
    by_reference = errors.documented(404, by_reference=True)[404]
    assert by_reference["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_a_full_redis_refuses_new_jobs_with_503_and_loses_no_queued_job(
    client: TestClient, redis: Redis
) -> None:
    """docker-compose.yml runs Redis with `maxmemory-policy noeviction`: at its memory limit
    writes fail instead of evicting keys, so admission must answer 503 (not 500) and every job
    already queued must stay as it was."""
    queued = client.post("/jobs", json=SPEC).json()["id"]
    before = sorted(k for k in redis.keys("*") if b"janitor" not in k)
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", 1)  # far below what it holds: every write is refused
    try:
        refused = client.post("/jobs", json=SPEC)
        idempotent = client.post("/jobs", json=SPEC, headers={"Idempotency-Key": "k1"})
        still = client.get(f"/jobs/{queued}")
    finally:
        redis.config_set("maxmemory", 0)
    for response in (refused, idempotent):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "30"
        [error] = response.json()["detail"]
        assert error["type"] == "store_full"
        assert "memory" in error["msg"]
    assert still.json()["status"] == "queued"
    assert sorted(k for k in redis.keys("*") if b"janitor" not in k) == before
    assert pool_queue(redis, "default").get_job_ids() == [queued]


def test_a_redis_that_refuses_us_is_503_not_500(client: TestClient, redis: Redis) -> None:
    """Found by make deploy-check: Debian's redis-server in protected mode answered DENIED and
    /readyz said 500. Any refusal (DENIED, READONLY, …) is the store being unavailable."""
    redis.replicaof("127.0.0.1", 1)  # a read-only replica of nothing: writes answer READONLY
    try:
        refused = client.post("/jobs", json=SPEC)
    finally:
        redis.replicaof("NO", "ONE")
    assert refused.status_code == 503, refused.text
    assert refused.json()["detail"][0]["type"] == "store_unavailable"
    assert refused.headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    "field",
    ["prompt", "negative_prompt", "webhook_url", "stage prompt", "stage model", "key"],
)
def test_a_lone_surrogate_anywhere_is_a_422_never_a_500(client: TestClient, field: str) -> None:
    """Found by a hostile pass: JSON may carry `\\ud800`, which UTF-8 cannot; the refusal
    echoed it and could not be encoded."""
    spec: dict[str, Any] = {
        "prompt": "p",
        "width": 64,
        "height": 64,
        "stages": [{"model": "demo-sd15"}],
    }
    bad = "a\ud800b"
    if field.startswith("stage "):
        spec["stages"][0][field.removeprefix("stage ")] = bad
    elif field == "key":
        spec[bad] = 1
    else:
        spec[field] = bad
    raw = json.dumps(spec)  # ensure_ascii: the surrogate travels as the escape \ud800
    response = client.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    body_of(response)  # a well-formed error body
    assert "\\ud800" in response.text


def test_the_failed_job_types_a_502_may_carry_are_the_failure_types() -> None:
    assert set(get_args(FailedJobType)) == {t.value for t in FailureType}


def test_past_the_high_water_mark_admission_answers_store_full_and_queues_nothing(
    client: TestClient, redis: Redis
) -> None:
    # Redis not yet full: the running jobs keep the rest of it to store their pictures.
    used = int(redis.info("memory")["used_memory"])
    redis.config_set("maxmemory", int(used / 0.95))
    try:
        refused = client.post("/jobs", json=SPEC)
    finally:
        redis.config_set("maxmemory", 0)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "30"
    assert refused.json()["detail"][0]["type"] == "store_full"
    assert pool_queue(redis, "default").get_job_ids() == []
