"""P5 with pictures in object storage: what Redis holds per finished job when the PNGs live in
an S3 bucket (moto's server on loopback stands in for MinIO; devstack.s3_server)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from devstack.processes import start_gateway, start_worker, stop, wait_for_gateway, wait_for_workers
from devstack.redis_server import RedisServer, free_port
from devstack.s3_server import S3Server
from jobs.redis_keys import job_key


def finish(client: httpx.Client, spec: dict[str, Any], jobs: int) -> list[str]:
    """Run `jobs` jobs of `spec` one after another (distinct seeds: distinct pictures)."""
    ids = []
    for seed in range(jobs):
        job_id = client.post("/jobs", json={**spec, "seed": seed}).json()["id"]
        with client.stream("GET", f"/jobs/{job_id}/events") as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"status":"succeeded"' in line:
                    break
        ids.append(job_id)
    time.sleep(2)  # the worker's last writes, and RQ's 1 s keep of its job (jobs.queues)
    return ids


def redis_per_job_with_s3(
    registry_file: Path, work: Path, spec: dict[str, Any], jobs: int
) -> dict[str, float]:
    """Bytes Redis holds per finished job, the record among them, and the PNG's size in the
    bucket, with IMAGEGEN_PICTURE_STORE=s3."""
    s3 = S3Server(work / "s3").start()
    server = RedisServer(work / "redis-s3").start()
    redis = Redis.from_url(server.url)
    env = {"REDIS_URL": server.url, "IMAGEGEN_REGISTRY": str(registry_file), **s3.env()}
    port = free_port()
    worker = start_worker(env, work / "worker-s3.log")
    gateway = start_gateway(env, port, work / "gateway-s3.log")
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        wait_for_workers(redis, [worker])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            finish(client, spec, 1)  # warm-up: the worker's first job, its first connections
            before = int(redis.info("memory")["used_memory"])
            ids = finish(client, spec, jobs)
            after = int(redis.info("memory")["used_memory"])
        listed = s3.client().list_objects_v2(Bucket=s3.bucket)
        sizes = [int(o.get("Size", 0)) for o in listed.get("Contents", [])]
        record = statistics.mean(int(redis.memory_usage(job_key(i)) or 0) for i in ids)
        return {"per_job": (after - before) / jobs, "record": record, "png": statistics.mean(sizes)}
    finally:
        stop(gateway)
        stop(worker)
        server.stop()
        s3.stop()
