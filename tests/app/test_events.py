"""Server-Sent Events: the envelope at every change, until the job ends; 404 stays JSON."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient

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
