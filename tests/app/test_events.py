"""Server-Sent Events: the envelope at every change, until the job ends; 404 stays JSON."""

from __future__ import annotations

import json
import threading
import time
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


def test_a_stream_follows_a_job_until_it_ends(client: TestClient) -> None:
    job_id = client.post("/jobs", json=UNSERVED).json()["id"]

    def cancel_soon() -> None:
        time.sleep(0.3)
        client.post(f"/jobs/{job_id}/cancel")

    threading.Thread(target=cancel_soon).start()
    response = client.get(f"/jobs/{job_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    received = events(response.text)
    assert [name for name, _ in received] == ["envelope", "envelope"]
    statuses = [json.loads(data)["status"] for _, data in received]
    assert statuses == ["queued", "canceled"]


def test_an_unknown_job_is_a_json_404(client: TestClient) -> None:
    response = client.get(f"/jobs/{uuid.uuid4()}/events")
    assert response.status_code == 404
    assert response.json()["detail"][0]["type"] == "job_not_found"
