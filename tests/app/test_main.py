"""The app as `create_app` builds it: its janitor sweeps while it runs, and open mode is loud."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import GatewaySettings
from tests.helpers import abandon

UNSERVED = {
    "prompt": "p",
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15-unserved", "steps": 2}],
}


def test_the_gateway_janitor_requeues_an_abandoned_job(
    gateway_settings: GatewaySettings, redis: Redis
) -> None:
    settings = gateway_settings.model_copy(update={"sweep_interval_s": 0.1})
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/jobs", json=UNSERVED).json()["id"]
        abandon(redis, job_id, "unserved")
        deadline = time.monotonic() + 5
        while client.get(f"/jobs/{job_id}").json()["status"] != "queued":
            assert time.monotonic() < deadline, "the janitor never swept"
            time.sleep(0.05)
        assert job_id.encode() in redis.lrange("rq:queue:imagegen.unserved", 0, -1)


def test_open_mode_says_so_in_the_log(
    gateway_settings: GatewaySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    create_app(gateway_settings)  # it configures JSON logging on stderr
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any(line["level"] == "WARNING" and "OPEN MODE" in line["msg"] for line in lines)
