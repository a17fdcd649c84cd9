"""Every /v1 error in OpenAI's shape, the gateway's own refusals included, and nothing else
rewritten."""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis

from app.openai.errors import openai_error
from tests.app.conftest import queued


def test_a_gateway_error_body_reads_as_openais() -> None:
    detail = [{"type": "size_not_multiple", "loc": ["body", "size"], "msg": "use 64"}]
    assert openai_error(400, detail) == {
        "error": {"message": "use 64", "type": "invalid_request_error", "param": "size",
                  "code": "size_not_multiple"}
    }  # fmt: skip
    assert (
        openai_error(401, [{"type": "not_authenticated", "loc": ["header"], "msg": "key"}])[
            "error"
        ]["type"]
        == "authentication_error"
    )


def test_validation_errors_are_openais_400_and_queue_nothing(
    client: TestClient, redis: Redis
) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "p", "n": 9})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("n", "less_than_equal")
    assert queued(redis) == 0


def test_without_a_key_the_answer_is_openais_401(secured: TestClient) -> None:
    response = secured.post("/v1/images/generations", json={"prompt": "p"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert secured.get("/v1/models").json()["error"]["type"] == "authentication_error"


def test_other_faces_keep_the_gateways_shape(client: TestClient) -> None:
    assert "detail" in client.post("/jobs", json={"prompt": "p"}).json()
    assert client.get("/v1/models").status_code == 200  # and a /v1 success untouched
