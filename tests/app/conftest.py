"""A gateway with API keys, caps and a small body limit, in-process on the test's Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.keys import digest
from app.main import create_app
from app.settings import GatewaySettings

ALICE, BOB, ROOT = "ig_alice_key", "ig_bob_key", "ig_admin_key"
SPEC = {"prompt": "a lighthouse", "width": 64, "height": 64, "stages": [{"model": "demo-sd15"}]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secured(gateway_settings: GatewaySettings) -> Iterator[TestClient]:
    settings = gateway_settings.model_copy(
        update={
            "api_keys": {"alice": digest(ALICE), "bob": digest(BOB)},
            "admin_keys": {"ops": digest(ROOT)},
            "max_outstanding_per_key": 3,
            "max_outstanding_jobs": 5,
            "reserved_per_key": 1,  # 3 keys: 2 slots shared
            "max_body_bytes": 20_000,
        }
    )
    with TestClient(create_app(settings)) as client:
        yield client


def queued(redis: Redis) -> int:
    return int(redis.llen("rq:queue:imagegen.default"))
