"""Workers outlive a Redis at its memory limit: one started while it is full waits for room,
idle ones keep waiting instead of quitting (RQ's own heartbeat and bookkeeping writes raised out
of its loop: idle workers exited within seconds, a new one at once, a crash loop under a
restart policy), and once there is room again they take jobs and deliver webhooks.

A private Redis (its `maxmemory` is set to 1 byte: every write that needs memory is refused,
EXPIRE and deletes are not), a gateway, a generation worker and a webhook worker.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq.job import Job

from devstack.processes import (
    start_gateway,
    start_webhook_worker,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_rq_worker,
    wait_for_workers,
)
from devstack.redis_server import RedisServer, free_port
from jobs.webhooks import WEBHOOK_QUEUE
from tests.helpers import submit_and_wait, wait_final
from tests.receiver import WEBHOOK_SECRET, Receiver

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

# Longer than the idle worker lasted on a full Redis (10 s) and than RQ's dequeue timeout.
FULL_FOR_S = 16
JOB = {"prompt": "room", "width": 64, "height": 64, "stages": [{"model": "demo-sd15", "steps": 2}]}


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Redis]]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server, Redis.from_url(server.url)
    finally:
        server.stop()


def rq_status_becomes(redis: Redis, job_id: str, status: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Job.fetch(job_id, connection=redis).get_status() != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        assert process.poll() is None, f"exited with {process.returncode}"


def test_workers_wait_out_a_full_redis_and_work_once_there_is_room(
    full_redis: tuple[RedisServer, Redis], registry_file: Path, tmp_path: Path
) -> None:
    server, redis = full_redis
    env = {
        "REDIS_URL": server.url,
        "IMAGEGEN_REGISTRY": str(registry_file),
        "IMAGEGEN_TORCH_THREADS": "1",
        "IMAGEGEN_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "IMAGEGEN_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
        "IMAGEGEN_SWEEP_INTERVAL_S": "1",
    }
    redis.config_set("maxmemory", 1)  # full before anything starts
    port = free_port()
    worker = start_worker(env, tmp_path / "worker.log")
    hooks = start_webhook_worker(env, tmp_path / "webhooks.log")
    gateway = start_gateway(env, port, tmp_path / "gateway.log")
    processes = [worker, hooks, gateway]
    receiver = Receiver()
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            refused = http.post("/jobs", json=JOB)
            assert refused.status_code == 503
            assert refused.json()["detail"][0]["type"] == "store_full"
            time.sleep(FULL_FOR_S)
            alive(processes)  # started while full: waiting, not gone
            redis.config_set("maxmemory", 0)
            wait_for_workers(redis, [worker])
            wait_for_rq_worker(redis, hooks, WEBHOOK_QUEUE)
            first = submit_and_wait(http, {**JOB, "webhook_url": receiver.url})
            assert first["status"] == "succeeded", first["error"]
            assert len(receiver.wait(1)) == 1
            time.sleep(1)  # the webhook worker has filed its attempt

            redis.config_set("maxmemory", 1)  # full again, the workers idle
            time.sleep(FULL_FOR_S)
            alive(processes)
            redis.config_set("maxmemory", 0)
            second = submit_and_wait(http, {**JOB, "webhook_url": receiver.url}, timeout=60)
            assert second["status"] == "succeeded", second["error"]

            # Full while a job runs: its pictures and RQ's filing of its end wait for room.
            slow = {
                **JOB,
                "width": 128,
                "height": 128,
                "stages": [{"model": "demo-sd15", "steps": 40}],
            }
            job_id = http.post("/jobs", json=slow).json()["id"]
            while http.get(f"/jobs/{job_id}").json()["status"] == "queued":
                time.sleep(0.01)
            redis.config_set("maxmemory", 1)
            time.sleep(4)
            alive(processes)
            redis.config_set("maxmemory", 0)
            third = wait_final(http, job_id, timeout=60)
            assert third["status"] == "succeeded", third["error"]
            # The job's own record is written first; RQ files its end a moment after.
            assert rq_status_becomes(redis, job_id, "finished", timeout=10)
        delivered = receiver.wait(2, timeout=30)
        assert len(delivered) == 2
    finally:
        receiver.close()
        for process in processes:
            stop(process)
