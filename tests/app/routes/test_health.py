"""Health routes: liveness, readiness (503 when Redis is down or at its memory limit)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import GatewaySettings
from tests.app.conftest import ALICE, ROOT, auth


def test_readyz_is_503_when_redis_is_down(gateway_settings: GatewaySettings) -> None:
    dead = gateway_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503


def test_readyz_lists_models_no_live_worker_serves(client: TestClient) -> None:
    body = client.get("/readyz").json()
    assert body["redis"] == "ok"
    assert body["workers"] == 0
    assert "demo-sd15" in body["models_without_workers"]


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.post(
        "/jobs",
        json={"prompt": "p", "width": 64, "height": 64, "stages": [{"model": "demo-sd15"}]},
    )
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'imagegen_jobs_total{event="submitted",model="demo-sd15"} 1.0' in response.text
    assert 'imagegen_queue_depth{queue="imagegen.default"} 1.0' in response.text


def test_readyz_says_store_full_at_redis_memory_limit(client: TestClient, redis: Redis) -> None:
    """Found by a hostile pass: admission refused every job while /readyz said ready."""
    redis.config_set("maxmemory", 1)
    try:
        full = client.get("/readyz")
    finally:
        redis.config_set("maxmemory", 0)
    assert full.status_code == 503
    assert full.json()["detail"][0]["type"] == "store_full"
    assert full.headers["Retry-After"] == "30"
    assert client.get("/readyz").status_code == 200


def test_with_keys_metrics_take_an_admin_key_and_health_none(secured: TestClient) -> None:
    # /metrics counts every key's jobs by model: not for any key holder to read.
    assert secured.get("/metrics").json()["detail"][0]["type"] == "not_authenticated"
    refused = secured.get("/metrics", headers=auth(ALICE))
    assert refused.status_code == 403
    assert refused.json()["detail"][0]["type"] == "admin_only"
    assert secured.get("/metrics", headers=auth(ROOT)).status_code == 200
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200
