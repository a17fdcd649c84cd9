"""Admission: the checks a job passes before it is stored and queued."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import GatewaySettings

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
