"""Progress, events, cancel and timeouts on the real stack (Redis, worker process, uvicorn)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from rq.job import Job
from rq.job import JobStatus as RQStatus

from jobs.queues import SERIALIZER
from tests.conftest import Stack
from tests.helpers import submit_and_wait, wait_final

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

QUICK = {
    "prompt": "quick",
    "seed": 1,
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15", "steps": 2}],
}


def slow_spec(steps: int = 150, **extra: Any) -> dict[str, Any]:
    """A demo-sd15 job of several seconds on this CPU."""
    return {
        "prompt": "slow",
        "seed": 3,
        "width": 384,
        "height": 384,
        "stages": [{"model": "demo-sd15", "steps": steps}],
        **extra,
    }


def wait_running(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        envelope: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if envelope["status"] == "running" and envelope["progress"]:
            return envelope
        assert envelope["status"] in ("queued", "running"), envelope
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reported progress")


def test_progress_is_reported_while_running(stack: Stack) -> None:
    with stack.client() as client:
        job_id = client.post("/jobs", json=slow_spec(steps=60)).json()["id"]
        envelope = wait_running(client, job_id)
        progress = envelope["progress"]
        assert progress["stage"] == 1
        assert progress["stages"] == 1
        assert 0 < progress["step"] <= progress["steps"] == 60
        assert 0 < progress["fraction"] <= 1
        assert envelope["started_at"]
        final = wait_final(client, job_id)
        assert final["status"] == "succeeded"
        assert final["progress"]["fraction"] == 1.0


def test_events_stream_status_and_progress_until_the_end(stack: Stack) -> None:
    with stack.client() as client:
        job_id = client.post("/jobs", json=slow_spec(steps=40, width=256, height=256)).json()["id"]
        events = []
        with client.stream("GET", f"/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line.removeprefix("data: "))))
    statuses = [e["status"] for _, e in events]
    assert statuses[-1] == "succeeded"
    assert "running" in statuses
    assert any(e["progress"] and 0 < e["progress"]["fraction"] < 1 for _, e in events)
    assert events[-1][1]["images"]
    with stack.client() as client:
        assert client.get(f"/jobs/{uuid.uuid4()}/events").status_code == 404


def test_cancel_a_running_job_stops_it_at_the_next_step(stack: Stack) -> None:
    with stack.client() as client:
        job_id = client.post("/jobs", json=slow_spec()).json()["id"]
        wait_running(client, job_id)
        asked = time.monotonic()
        response = client.post(f"/jobs/{job_id}/cancel")
        assert response.status_code == 202
        final = wait_final(client, job_id)
        stopped_after = time.monotonic() - asked
        assert final["status"] == "canceled"
        assert final["images"] == []
        assert final["progress"]["step"] < 150
        assert stopped_after < 5, f"cancel took {stopped_after:.1f} s"
        # The worker takes the next job.
        assert submit_and_wait(client, QUICK)["status"] == "succeeded"
        # Canceling a finished job is a conflict.
        again = client.post(f"/jobs/{job_id}/cancel")
        assert again.status_code == 409
        [error] = again.json()["detail"]
        assert error["type"] == "job_already_finished"
        assert "canceled" in error["msg"]


def test_cancel_a_queued_job_means_it_never_runs(stack: Stack) -> None:
    spec = {**QUICK, "stages": [{"model": "demo-sd15-unserved", "steps": 2}]}
    with stack.client() as client:
        job_id = client.post("/jobs", json=spec).json()["id"]
        response = client.post(f"/jobs/{job_id}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "canceled"
        assert stack.redis.llen("rq:queue:imagegen.unserved") == 0
        envelope = client.get(f"/jobs/{job_id}").json()
        assert envelope["started_at"] is None
        assert client.post(f"/jobs/{uuid.uuid4()}/cancel").status_code == 404


def test_a_job_over_its_timeout_fails_with_type_timeout(stack: Stack) -> None:
    with stack.client() as client:
        final = submit_and_wait(client, slow_spec(timeout_s=1))
        assert final["status"] == "failed"
        assert final["error"]["type"] == "timeout"
        assert "1 s" in final["error"]["message"]
        # RQ's own tools (rq info, dashboards) file it as failed too, once the worker is done.
        rq_job = Job.fetch(final["id"], connection=stack.redis, serializer=SERIALIZER)
        deadline = time.monotonic() + 10
        while rq_job.get_status() != RQStatus.FAILED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rq_job.get_status() == RQStatus.FAILED
        assert submit_and_wait(client, QUICK)["status"] == "succeeded"


def test_timeout_over_the_deployment_cap_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post("/jobs", json={**QUICK, "timeout_s": 80000})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "timeout_s"]


def test_models_show_which_live_workers_hold_them(stack: Stack) -> None:
    with stack.client() as client:
        models = {m["name"]: m for m in client.get("/models").json()}
    [worker] = models["demo-sd15"]["workers_serving"][:1]
    assert worker in models["demo-sd15"]["loaded_on"]
    assert models["demo-sd15-unserved"]["workers_serving"] == []
    assert models["demo-broken"]["loaded_on"] == []
