"""Health routes: liveness, readiness (503 when Redis is down)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import GatewaySettings


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
