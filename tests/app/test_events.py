"""Server-Sent Events: the envelope at every change, until the job ends; 404 stays JSON."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi.sse import ServerSentEvent
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from app.events import READS_AT_ONCE, JobEvents, StreamSlots, TooManyStreams
from app.main import create_app
from app.routes import jobs as jobs_routes
from app.settings import GatewaySettings
from devstack.redis_server import RedisServer

UNSERVED = {
    "prompt": "p",
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15-unserved", "steps": 2}],
}


def events(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], fields.get("data", "")))
    return out


def test_a_stream_of_a_finished_job_sends_its_last_envelope_and_ends(client: TestClient) -> None:
    # The stack tier (tests/stack/test_job_control.py) follows a running job through its changes.
    job_id = client.post("/jobs", json=UNSERVED).json()["id"]
    client.post(f"/jobs/{job_id}/cancel")
    response = client.get(f"/jobs/{job_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    [(name, data)] = events(response.text)
    assert name == "envelope"
    assert json.loads(data)["status"] == "canceled"


def test_an_unknown_job_is_a_json_404(client: TestClient) -> None:
    response = client.get(f"/jobs/{uuid.uuid4()}/events")
    assert response.status_code == 404
    assert response.json()["detail"][0]["type"] == "job_not_found"


def test_events_are_numbered_and_a_reconnect_resumes_with_the_current_envelope(
    client: TestClient,
) -> None:
    job_id = client.post("/jobs", json=UNSERVED).json()["id"]
    client.post(f"/jobs/{job_id}/cancel")
    first = client.get(f"/jobs/{job_id}/events").text
    assert "id: 1" in first
    assert "retry: 2000" in first
    resumed = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "7"})
    assert "id: 8" in resumed.text
    [(name, data)] = events(resumed.text)
    assert (name, json.loads(data)["status"]) == ("envelope", "canceled")


@pytest.mark.parametrize("last_event_id", ["²", "¹", "-1", "1e3", "", None])
def test_a_last_event_id_that_is_not_ascii_digits_resumes_from_the_start(
    last_event_id: str | None,
) -> None:
    # A header byte 0xb2 reaches the route as "²" (headers are latin-1): a digit to
    # str.isdigit, a ValueError to int(), and the stream died after its 200. (The test client
    # cannot send that byte: it re-encodes header values, hence the function on its own.)
    assert jobs_routes.resume_after(last_event_id) == 0
    assert jobs_routes.resume_after("42") == 42


@pytest.mark.parametrize("last_event_id", ["-1", "1e3", "abc"])
def test_a_stream_with_a_last_event_id_that_is_no_number_starts_from_one(
    client: TestClient, last_event_id: str
) -> None:
    job_id = client.post("/jobs", json=UNSERVED).json()["id"]
    client.post(f"/jobs/{job_id}/cancel")
    resumed = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_event_id})
    assert resumed.status_code == 200
    [(name, data)] = events(resumed.text)
    assert (name, json.loads(data)["status"]) == ("envelope", "canceled")
    assert "id: 1\n" in resumed.text


def test_a_key_holds_a_bounded_number_of_open_streams(
    gateway_settings: GatewaySettings,
) -> None:
    settings = gateway_settings.model_copy(update={"max_streams_per_key": 2})
    with TestClient(create_app(settings)) as client:
        job_id = client.post("/jobs", json=UNSERVED).json()["id"]  # queued: its stream stays open
        with (
            client.stream("GET", f"/jobs/{job_id}/events") as first,
            client.stream("GET", f"/jobs/{job_id}/events") as second,
        ):
            assert (first.status_code, second.status_code) == (200, 200)
            third = client.get(f"/jobs/{job_id}/events")
            assert third.status_code == 429
            assert third.json()["detail"][0]["type"] == "too_many_streams"
            assert third.headers["Retry-After"] == "5"
        # Closed streams give their slots back.
        client.post(f"/jobs/{job_id}/cancel")
        assert client.get(f"/jobs/{job_id}/events").status_code == 200


def test_slots_are_per_key() -> None:
    slots = StreamSlots(per_key=1)
    with slots.hold("alice"), slots.hold("bob"), pytest.raises(TooManyStreams):
        slots.hold("alice").__enter__()
    with slots.hold("alice"):
        pass  # freed when its stream ended


def test_a_stream_that_breaks_says_so_in_a_json_line(
    gateway_settings: GatewaySettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def breaking(*args: object) -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(event="envelope", raw_data="{}", id="1")
        raise RuntimeError("Redis said something odd")

    monkeypatch.setattr(jobs_routes, "job_events", breaking)
    with TestClient(create_app(gateway_settings)) as client:  # logging to the captured stderr
        job_id = client.post("/jobs", json=UNSERVED).json()["id"]
        stream = client.get(f"/jobs/{job_id}/events").text
    assert [name for name, _ in events(stream)] == ["envelope"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [line] = [line for line in lines if line["msg"] == "event stream broke off"]
    assert (line["job_id"], line["route"]) == (job_id, "/jobs/{job_id}/events")
    assert "RuntimeError" in line["exc"]


def test_many_followers_reading_at_once_borrow_a_bounded_number_of_connections(
    redis_server: RedisServer,
) -> None:
    """150 streams' rechecks falling together on the loop: at most READS_AT_ONCE connections."""

    async def read_all() -> int:
        redis = AsyncRedis(port=redis_server.port, db=1, client_name="followers")
        hub = JobEvents(redis)
        await asyncio.gather(*(hub.read(redis, str(uuid.uuid4())) for _ in range(150)))
        # As the server counts them: the pool's connections stay open until closed.
        clients = Redis(port=redis_server.port).client_list()
        await redis.aclose()
        return sum(c.get("name") == "followers" for c in clients)

    assert asyncio.run(read_all()) <= READS_AT_ONCE
