"""The worker process's RQ side, run in this process in burst mode: it takes a queued job, runs
it through its resident pipelines, and publishes what it holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from contract.envelope import JobStatus
from contract.registry import ModelRegistry
from jobs.presence import live_workers
from jobs.queues import SERIALIZER, pool_queue
from jobs.redis_keys import rq_job_id
from workers.settings import WorkerSettings
from workers.tasks import install_runner
from workers.worker import GenerationWorker, build_runner, unique_name


@pytest.fixture
def worker(redis: Redis, registry_file: Path) -> Iterator[GenerationWorker]:
    settings = WorkerSettings(registry=registry_file, preload=False)
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
    assert envelope["trace"][0]["worker"] == worker.name
    assert pool_queue(worker.connection, "default").fetch_job(rq_job_id(job_id, 0)) is not None


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
