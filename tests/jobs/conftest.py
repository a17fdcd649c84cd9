"""A job as the gateway queues it, on the test's private Redis: no HTTP, no worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from redis import Redis

from contract.checked import CheckedSpec
from jobs.caps import Caps
from jobs.lifecycle import Lifecycle
from jobs.queues import QueuePolicy, enqueue_segment
from jobs.store import JobStore

POOL = "p"
SPEC = CheckedSpec.model_validate(
    {
        "prompt": "a lighthouse",
        "seed": 1,
        "width": 64,
        "height": 64,
        "timeout_s": 60,
        "stages": [{"model": "m", "steps": 2, "guidance_scale": 7.0}],
    }
)


@pytest.fixture
def store(redis: Redis) -> JobStore:
    return JobStore(redis, result_ttl_s=60)


@pytest.fixture
def lifecycle(store: JobStore) -> Lifecycle:
    return Lifecycle(store)


QueueJob = Callable[..., str]


@pytest.fixture
def queue_job(store: JobStore) -> QueueJob:
    def queue(retries: int = 1, owner: str = "alice") -> str:
        job_id = str(uuid.uuid4())
        Caps(store.redis, 100, 100).reserve(job_id, owner)  # counted unfinished, as admitted
        with store.redis.pipeline() as pipe:
            pipe.multi()
            store.create(job_id, SPEC, pipe, owner=owner)
            enqueue_segment(store.redis, pipe, job_id, 0, POOL, QueuePolicy(60, retries, 60), owner)
            pipe.execute()
        return job_id

    return queue
