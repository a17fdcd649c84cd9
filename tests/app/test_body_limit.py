"""Bodies over the limit are refused with 413 before they are read, declared or streamed."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient
from redis import Redis

from tests.app.conftest import ALICE, SPEC, auth, queued


def test_bodies_over_the_limit_are_413(secured: TestClient, redis: Redis) -> None:
    big = {**SPEC, "prompt": "x" * 3000, "negative_prompt": "y" * 3999, "init_image": "A" * 20_000}
    response = secured.post("/jobs", json=big, headers=auth(ALICE))
    assert response.status_code == 413
    [error] = response.json()["detail"]
    assert error["type"] == "body_too_large"
    assert "20000 bytes" in error["msg"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"prompt": "'
        for _ in range(30):
            yield b"z" * 1000
        yield b'"}'

    streamed = secured.post(
        "/jobs", content=chunks(), headers={**auth(ALICE), "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert queued(redis) == 0
