"""Health, readiness, Prometheus metrics and JSON logs, on the real stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.helpers import submit_and_wait

QUICK = {
    "prompt": "observe",
    "seed": 5,
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15", "steps": 3}],
}

# Runs in the test process that holds the shared stack (pytest-xdist --dist loadgroup).
pytestmark = pytest.mark.xdist_group("stack")


@pytest.mark.stack
def test_readyz_reports_redis_and_models_without_workers(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
    assert ready["redis"] == "ok"
    assert ready["workers"] >= 1
    assert "demo-sd15-unserved" in ready["models_without_workers"]
    assert "demo-sd15" not in ready["models_without_workers"]


def sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{{wanted}}}" if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{wanted}}} not in metrics")


@pytest.mark.stack
def test_metrics_count_jobs_and_time_them(stack: Stack) -> None:
    with stack.client() as client:
        before = client.get("/metrics").text
        assert submit_and_wait(client, QUICK)["status"] == "succeeded"
        assert (
            submit_and_wait(client, {**QUICK, "stages": [{"model": "demo-broken"}]})["status"]
            == "failed"
        )
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def delta(name: str, **labels: str) -> float:
        try:
            old = sample(before, name, **labels)
        except AssertionError:
            old = 0.0
        return sample(after, name, **labels) - old

    assert delta("imagegen_jobs_total", event="submitted", model="demo-sd15") == 1
    assert delta("imagegen_jobs_total", event="succeeded", model="demo-sd15") == 1
    assert delta("imagegen_jobs_total", event="failed", model="demo-broken") == 1
    assert delta("imagegen_job_duration_seconds_count", model="demo-sd15") == 1
    assert delta("imagegen_step_seconds_count", model="demo-sd15") == 1
    assert sample(after, "imagegen_step_seconds_bucket", le="+Inf", model="demo-sd15") >= 1
    assert sample(after, "imagegen_queue_depth", queue="imagegen.default") == 0
    assert sample(after, "imagegen_workers_alive") >= 1


@pytest.mark.stack
def test_logs_are_json_lines_with_the_job_id(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit_and_wait(client, QUICK)["id"]
    worker_lines = []
    for path in stack.logs.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                worker_lines.append(json.loads(line))
    about_job = [line for line in worker_lines if line.get("job_id") == job_id]
    assert {"running segment 0", "job succeeded"} <= {line["msg"] for line in about_job}
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in about_job)
    gateway = [
        json.loads(line)
        for line in (stack.logs / "gateway.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(line["msg"] == "job queued" and line["job_id"] == job_id for line in gateway)


def test_rq_info_shows_every_worker_on_its_queue(stack: Stack) -> None:
    # RQ's own tool, as an operator runs it: the webhook worker is listed before any webhook
    # was ever queued (its queue is registered when it starts), names in one style.
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "info", "--url", stack.redis_url, "--by-queue"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "imagegen.webhooks" in shown
    assert "imagegen.default" in shown
    assert "imagegen-webhooks" not in shown
    assert re.search(r"-webhooks", shown)  # the webhook worker, by its name
