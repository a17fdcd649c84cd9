"""The gateway never imports `workers` or torch, by any path.

The gateway runs as a real uvicorn process with those packages unimportable (an import hook that
raises and records the attempt), as in the API image, which holds neither. Its janitor must still
recover an abandoned job (planted as RQ's own tests plant one: an expired started-registry entry)
when no worker is alive to do it, fail the job once its retries are spent, and fail a job whose
RQ job an operator deleted.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from rq.job import Job

from devstack.processes import start_gateway, stop, wait_for_gateway
from devstack.redis_server import RedisServer, free_port
from jobs.queues import SERIALIZER, pool_queue
from tests.conftest import Stack
from tests.helpers import abandon, fetch_png, submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

GUARD = Path(__file__).with_name("guarded_gateway.py")
UNSERVED = {
    "prompt": "nobody serves this pool",
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15-unserved", "steps": 2}],
}


@dataclass
class Guarded:
    url: str
    process: subprocess.Popen[bytes]
    report: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop_and_read_report(self) -> list[dict[str, Any]]:
        stop(self.process)
        return [json.loads(line) for line in self.report.read_text().splitlines()]


def start_guarded(env: dict[str, str], root: Path) -> Guarded:
    port = free_port()
    report = root / "imports.jsonl"
    report.touch()
    process = start_gateway(env, port, root / "gateway.log", runner=(str(GUARD), str(report)))
    url = f"http://127.0.0.1:{port}"
    wait_for_gateway(url, process)
    return Guarded(url, process, report)


def assert_never_imported(report: list[dict[str, Any]]) -> None:
    attempts = [r for r in report if "import" in r]
    assert not attempts, "the gateway tried to import " + "\n".join(
        f"{a['import']} from:\n{''.join(a['stack'][-8:])}" for a in attempts
    )
    [loaded] = [r["loaded"] for r in report if "loaded" in r]
    assert loaded == []


def wait_status(
    http: httpx.Client, job_id: str, status: str, timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        envelope: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
        if envelope["status"] == status:
            return envelope
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {envelope['status']}, not {status}")


@pytest.fixture
def lonely_gateway(
    registry_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Guarded, Redis]]:
    """A guarded gateway on its own Redis, with no worker anywhere: only it can sweep."""
    root = tmp_path_factory.mktemp("lonely")
    server = RedisServer(root / "redis").start()
    env = {
        "REDIS_URL": server.url,
        "IMAGEGEN_REGISTRY": str(registry_file),
        "IMAGEGEN_SWEEP_INTERVAL_S": "0.3",
        "IMAGEGEN_MAX_RETRIES": "1",
    }
    gateway = start_guarded(env, root)
    try:
        yield gateway, Redis.from_url(server.url)
    finally:
        stop(gateway.process)
        server.stop()


def test_janitor_recovers_and_fails_abandoned_jobs_without_workers_importable(
    lonely_gateway: tuple[Guarded, Redis],
) -> None:
    gateway, redis = lonely_gateway
    queue = pool_queue(redis, "unserved")
    with gateway.client() as http:
        retried = http.post("/jobs", json=UNSERVED).json()["id"]
        abandon(redis, retried, "unserved")
        # The gateway's sweep runs RQ's cleanup: a retry is left, so the job is queued again.
        wait_status(http, retried, "queued")
        assert retried in queue.get_job_ids()
        canceled = http.post(f"/jobs/{retried}/cancel")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"

        doomed = http.post("/jobs", json=UNSERVED).json()["id"]
        abandon(redis, doomed, "unserved")
        wait_status(http, doomed, "queued")
        abandon(redis, doomed, "unserved")  # its worker died again: no retry left
        failed = wait_status(http, doomed, "failed")
        assert failed["error"]["type"] == "worker_lost"

        # An operator deletes a queued job in rq-dashboard (Job.delete): no worker will ever
        # run it, and the next sweep says so instead of leaving it queued forever.
        deleted = http.post("/jobs", json=UNSERVED).json()["id"]
        Job.fetch(deleted, connection=redis, serializer=SERIALIZER).delete()
        lost = wait_status(http, deleted, "failed")
        assert lost["error"]["type"] == "queue_entry_lost"
    assert_never_imported(gateway.stop_and_read_report())


def test_gateway_serves_a_whole_job_life_without_importing_torch(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Submit, run on a real worker, read envelope, events and image, sweep and retry an
    abandoned job, cancel: then the gateway process holds no torch."""
    gateway = start_guarded(dict(stack.env), tmp_path_factory.mktemp("guarded"))
    try:
        with gateway.client() as http:
            done = submit_and_wait(
                http,
                {
                    "prompt": "a lighthouse",
                    "seed": 1,
                    "width": 64,
                    "height": 64,
                    "stages": [{"model": "demo-sd15", "steps": 2}],
                },
            )
            assert done["status"] == "succeeded"
            fetch_png(http, done["images"][0]["url"])
            events = http.get(f"/jobs/{done['id']}/events").text
            assert '"status":"succeeded"' in events
            assert http.get("/models").status_code == 200
            assert http.get("/metrics").status_code == 200

            job_id = http.post("/jobs", json=UNSERVED).json()["id"]
            abandon(stack.redis, job_id, "unserved")
            wait_status(http, job_id, "queued")
            assert http.post(f"/jobs/{job_id}/cancel").json()["status"] == "canceled"
    finally:
        report = gateway.stop_and_read_report()
    assert_never_imported(report)
