"""Pictures per second for many concurrent jobs of one shape: the service with cross-job batching
on and off, and naive diffusers (one eager call at a time) in the same run.

`make bench` (P6) runs it on the demo SD1.5; `python -m bench.gpu_check --throughput` on
full-size models. A worker reads its batching and compile settings at start, so each variant
gets a worker of its own; variants take turns, `rounds` times, and each reports its median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import torch
from redis import Redis

from contract.registry import ModelRegistry
from devstack.processes import start_gateway, start_worker, stop, wait_for_gateway, wait_for_workers
from devstack.redis_server import RedisServer, free_port
from jobs.redis_keys import job_key
from workers.models.loading import load_text_pipeline, resolve_device, resolve_dtype


def concurrent(client: httpx.Client, redis: Redis, spec: dict[str, Any], jobs: int) -> float:
    """Submit `jobs` jobs at once (distinct seeds), wait for all: pictures per second."""
    started = time.perf_counter()
    ids = [client.post("/jobs", json={**spec, "seed": seed}).json()["id"] for seed in range(jobs)]
    while True:
        statuses = [redis.hget(job_key(i), "status") for i in ids]
        if all(s == b"succeeded" for s in statuses):
            return jobs / (time.perf_counter() - started)
        if any(s in (b"failed", b"canceled") for s in statuses):
            raise RuntimeError("a throughput job did not succeed")
        time.sleep(0.005)


def service(
    registry_file: Path,
    work: Path,
    spec: dict[str, Any],
    jobs: int,
    variants: Mapping[str, Mapping[str, str]],
    rounds: int = 2,
    start_timeout_s: float = 60,
) -> dict[str, float]:
    """Pictures per second of each variant (worker environment overrides), median of rounds."""
    server = RedisServer(work / "redis-throughput").start()
    redis = Redis.from_url(server.url)
    port = free_port()
    env = {"REDIS_URL": server.url, "IMAGEGEN_REGISTRY": str(registry_file)}
    gateway = start_gateway(env, port, work / "gateway-throughput.log")
    runs: dict[str, list[float]] = {name: [] for name in variants}
    try:
        wait_for_gateway(f"http://127.0.0.1:{port}", gateway)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for round_ in range(rounds):
                for name, overrides in variants.items():
                    log = work / f"worker-{name}-{round_}.log"
                    worker = start_worker({**env, **overrides}, log)
                    try:
                        wait_for_workers(redis, [worker], timeout=start_timeout_s)
                        concurrent(client, redis, spec, jobs)  # warm-up
                        runs[name].append(concurrent(client, redis, spec, jobs))
                    finally:
                        stop(worker)
    finally:
        stop(gateway)
        server.stop()
    return {name: statistics.median(values) for name, values in runs.items()}


def naive(registry: ModelRegistry, spec: dict[str, Any], jobs: int) -> float:
    """What a hand-written wrapper does: the pipeline called eagerly, one job after another."""
    stage = spec["stages"][0]
    entry = registry.models[stage["model"]]
    device = resolve_device(entry.device)
    pipe = load_text_pipeline(entry, device, resolve_dtype(entry.dtype, device), shared={})

    def one(seed: int) -> None:
        pipe(
            spec["prompt"],
            num_inference_steps=stage["steps"],
            height=spec["height"],
            width=spec["width"],
            generator=torch.Generator("cpu").manual_seed(seed),
        )

    one(0)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for seed in range(jobs):
        one(seed)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return jobs / (time.perf_counter() - started)
