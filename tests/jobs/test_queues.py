"""Queued RQ jobs: JSON payloads that name the worker's function and a torch-free callback."""

from __future__ import annotations

import json
import zlib

from redis import Redis
from rq.job import Job

from jobs.queues import HARD_TIMEOUT_MARGIN_S, ON_FAILURE, RUN_JOB, SERIALIZER, pool_queue
from jobs.store import JobStore
from tests.jobs.conftest import POOL, QueueJob


def test_a_segment_is_a_json_payload_on_its_pools_queue(
    store: JobStore, queue_job: QueueJob, redis: Redis
) -> None:
    job_id = queue_job(retries=2)
    assert pool_queue(redis, POOL).get_job_ids() == [job_id]
    func, _instance, args, _kwargs = json.loads(
        zlib.decompress(redis.hget(f"rq:job:{job_id}", "data"))
    )  # type: ignore[arg-type]
    assert (func, args) == (RUN_JOB, [job_id, 0])
    job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    assert job.retries_left == 2
    assert job.timeout == 60 + HARD_TIMEOUT_MARGIN_S
    assert job._failure_callback_name == ON_FAILURE  # RQ keeps the name it will import


def test_the_failure_callback_is_importable_without_workers() -> None:
    # RQ imports it by name wherever a failure is found, the gateway included.
    assert ON_FAILURE.split(".")[0] == "jobs"
    assert RUN_JOB.startswith("workers.")
