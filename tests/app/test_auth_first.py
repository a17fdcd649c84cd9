"""A request with a body and no valid key is refused before its body is read (found by a
hostile pass: 16 concurrent 32 MB bodies with no key took the gateway near 1 GB)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth_first import AuthenticateFirst
from app.keys import KeyRing, digest
from app.openai.errors import OpenAIErrors
from tests.app.conftest import ALICE, SPEC, auth

KEYS = KeyRing({"alice": digest(ALICE)}, {})
NO_KEYS = KeyRing({}, {})


def through(keys: KeyRing, method: str, headers: list[tuple[bytes, bytes]]) -> tuple[Any, bool]:
    """Run a request through the middleware; the body must not be read on the way."""
    sent: list[Any] = []
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/jobs", "headers": headers}
    asyncio.run(AuthenticateFirst(app, keys)(scope, receive, send))
    return (sent[0] if sent else None), bool(reached)


@pytest.mark.parametrize(
    "headers",
    [[], [(b"authorization", b"Bearer not-a-key")], [(b"authorization", b"Basic YTpi")]],
    ids=["no key", "unknown key", "not bearer"],
)
def test_no_valid_key_is_a_401_before_the_body_is_read(headers: list[tuple[bytes, bytes]]) -> None:
    start, reached = through(KEYS, "POST", headers)
    assert not reached
    assert start["status"] == 401
    assert (b"www-authenticate", b"Bearer") in start["headers"]


def test_a_valid_key_open_mode_and_bodiless_requests_go_on() -> None:
    assert through(KEYS, "POST", [(b"authorization", f"Bearer {ALICE}".encode())])[1]
    assert through(NO_KEYS, "POST", [])[1]
    assert through(KEYS, "GET", [])[1]  # no body to read: the route answers its own 401


def test_the_gateway_checks_the_key_first_and_answers_in_the_one_error_shape(
    secured: TestClient,
) -> None:
    # before the body limit and the routes; only the OpenAI face's error rewriting, which reads
    # no request body, wraps it (so its 401s are OpenAI's shape on /v1)
    outermost = [m.cls for m in secured.app.user_middleware[:2]]  # type: ignore[attr-defined]
    assert outermost == [OpenAIErrors, AuthenticateFirst]
    refused = secured.post("/jobs", json={**SPEC, "prompt": "x" * 15_000})
    assert refused.status_code == 401
    assert refused.json()["detail"][0]["type"] == "not_authenticated"
    assert secured.post("/jobs", json=SPEC, headers=auth(ALICE)).status_code == 202
