"""The worker process's RQ side, run in this process in burst mode: it takes a queued job, runs
it through its resident pipelines, and publishes what it holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from redis import Redis
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import FailedJobRegistry

from contract.envelope import JobStatus
from contract.registry import ModelRegistry
from jobs.disclosure import public_worker_name
from jobs.presence import live_workers
from jobs.queues import RQ_RESULT_TTL_S, SERIALIZER, pool_queue
from jobs.redis_keys import init_image_key, job_key, rq_job_id
from tests.helpers import png_b64
from workers.settings import WorkerSettings
from workers.tasks import install_runner
from workers.worker import GenerationWorker, build_runner, finish_in_background, unique_name


@pytest.fixture
def worker(redis: Redis, registry_file: Path) -> Iterator[GenerationWorker]:
    settings = WorkerSettings(registry=registry_file, preload=False, finish_in_background=True)
    name = unique_name("test")
    runner = build_runner(settings, redis, name)
    install_runner(runner)
    try:
        yield GenerationWorker(
            [pool_queue(redis, "default")],
            connection=redis,
            name=name,
            serializer=SERIALIZER,
            settings=settings,
            cache=runner.cache,
            lifecycle=runner.lifecycle,
        )
    finally:
        install_runner(None)


def test_names_are_unique_per_process_start() -> None:
    assert unique_name("host") != unique_name("host")


def test_a_queued_job_runs_to_succeeded_in_burst_mode(
    worker: GenerationWorker, client: TestClient
) -> None:
    job_id = client.post(
        "/jobs",
        json={
            "prompt": "p",
            "seed": 2,
            "width": 64,
            "height": 64,
            "stages": [{"model": "demo-sd15", "steps": 2}],
        },
    ).json()["id"]
    worker.work(burst=True)
    envelope = client.get(f"/jobs/{job_id}").json()
    assert envelope["status"] == JobStatus.SUCCEEDED.value
    assert envelope["trace"][0]["worker"] == public_worker_name(worker.name)
    # Its RQ job goes with its call: the record holds all there is to keep (6 KiB less).
    ttl = worker.connection.ttl(Job.key_for(rq_job_id(job_id, 0)))
    assert ttl == -2 or 0 <= ttl <= RQ_RESULT_TTL_S  # -2: gone already; never -1 (kept)


def test_a_job_that_fails_is_failed_in_rqs_registries_too_and_not_retried(
    worker: GenerationWorker, client: TestClient
) -> None:
    """`rq info` and dashboards must agree with the API: before, RQ counted these finished."""
    spec = {"prompt": "p", "seed": 2, "width": 64, "height": 64, "strength": 0.5}
    spec |= {"init_image": png_b64(64, 64), "stages": [{"model": "demo-sd15", "steps": 2}]}
    no_picture = client.post("/jobs", json=spec).json()["id"]
    unreadable = client.post("/jobs", json=spec).json()["id"]
    redis = worker.connection
    redis.delete(init_image_key(no_picture))  # what the worker needs is gone
    redis.hset(job_key(unreadable), "spec", "{}")  # written by some other version

    worker.work(burst=True)

    failed = FailedJobRegistry(queue=pool_queue(redis, "default"))
    for job_id, failure in ((no_picture, "invalid_job"), (unreadable, "record_unreadable")):
        envelope = client.get(f"/jobs/{job_id}").json()
        assert (envelope["status"], envelope["error"]["type"]) == ("failed", failure)
        rq_job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
        assert rq_job.get_status() == RQStatus.FAILED
        assert job_id in failed
    assert redis.hget(job_key(no_picture), "attempts:0") == b"1"  # run once: no retry


def test_presence_names_the_pool_and_what_is_loaded(
    worker: GenerationWorker, registry: ModelRegistry
) -> None:
    worker.cache.get("demo-sd15")
    presence = worker.presence()
    assert presence.pool == "default"
    assert "demo-sd15" in presence.models
    assert presence.loaded == ["demo-sd15"]
    assert presence.resident_mib > 0
    assert live_workers(worker.connection) == []  # published by the heartbeat thread only


def test_a_model_that_fails_to_preload_leaves_the_rest_served(
    redis: Redis, demo_models: Path, tmp_path: Path
) -> None:
    # It made the worker exit at start, taking every model of its pool down.
    truncated = tmp_path / "truncated.safetensors"
    good = demo_models / "demo-sd15" / "unet" / "diffusion_pytorch_model.safetensors"
    truncated.write_bytes(good.read_bytes()[:4096])
    models = {
        "demo-sd15": {"architecture": "sd15", "source": {"folder": str(demo_models / "demo-sd15")}},
        "half-download": {
            "architecture": "sd15",
            "source": {"single_file": str(truncated), "config": str(demo_models / "demo-sd15")},
        },
    }
    registry_path = tmp_path / "registry.yaml"
    registry_path.write_text(
        yaml.safe_dump({"models": {n: {**m, "preload": True} for n, m in models.items()}})
    )
    runner = build_runner(WorkerSettings(registry=registry_path), redis, unique_name("test"))
    assert runner.cache.loaded() == ["demo-sd15"]
    assert "truncated.safetensors is truncated" in runner.cache.unavailable["half-download"]


def test_pictures_are_stored_off_the_critical_path_where_a_gpu_denoises(
    registry_file: Path, tmp_path: Path
) -> None:
    cpu = ModelRegistry.load(registry_file)
    assert not finish_in_background(WorkerSettings(registry=registry_file), cpu)
    assert finish_in_background(
        WorkerSettings(registry=registry_file, finish_in_background=True), cpu
    )
    entry = cpu.models["demo-sd15"].model_dump(mode="json")
    gpu = ModelRegistry.model_validate({"models": {"demo-sd15": {**entry, "device": "cuda"}}})
    assert finish_in_background(WorkerSettings(registry=registry_file), gpu)
    assert not finish_in_background(
        WorkerSettings(registry=registry_file, finish_in_background=False), gpu
    )
