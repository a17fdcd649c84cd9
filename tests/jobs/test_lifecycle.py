"""Ending a job: the final status applies once, and only then are metrics told and webhooks owed;
RQ's failure callback turns hard timeouts and abandoned jobs into envelopes."""

from __future__ import annotations

import uuid

from pydantic import AnyUrl
from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from contract.checked import HiresStage
from contract.envelope import JobStatus
from contract.resamplers import Upscaler
from contract.spec import Handoff, Mode
from jobs import lifecycle
from jobs.lifecycle import Lifecycle, on_rq_failure
from jobs.queues import SERIALIZER
from jobs.redis_keys import (
    METRICS_JOBS,
    OUTSTANDING,
    handoff_key,
    init_image_key,
    outstanding_key,
)
from jobs.store import JobStore
from jobs.webhooks import Webhooks, webhook_queue
from tests.jobs.conftest import SPEC, QueueJob


def rq_job(redis: Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def test_end_applies_once_and_counts_once(store: JobStore, queue_job: QueueJob) -> None:
    job_id = queue_job()
    store.redis.zadd(OUTSTANDING, {job_id: 1})
    store.redis.zadd(outstanding_key("alice"), {job_id: 1})
    ends = Lifecycle(store)
    assert ends.end(job_id, JobStatus.CANCELED).applied
    again = ends.end(job_id, JobStatus.SUCCEEDED)
    assert not again.applied
    assert again.previous is JobStatus.CANCELED
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.CANCELED
    assert envelope.finished_at is not None
    assert store.redis.hget(METRICS_JOBS, "canceled|m") == b"1"
    assert store.redis.hget(METRICS_JOBS, "succeeded|m") is None
    # The caps' slots went with the final status, the owner's included.
    assert store.redis.zcard(OUTSTANDING) == 0
    assert store.redis.zcard(outstanding_key("alice")) == 0


def test_a_job_that_ends_leaves_no_input_pictures_behind(store: JobStore) -> None:
    """Found by a hostile pass: init images were kept with no TTL, hand-over PNGs for a day."""
    job_id = str(uuid.uuid4())
    hires = HiresStage(model="m", mode=Mode.HIRES, handoff=Handoff.PIXEL, steps=2,
                       guidance_scale=3.5, width=64, height=64, denoise=0.5,
                       upscaler=Upscaler.LANCZOS)  # fmt: skip
    spec = SPEC.model_copy(update={"stages": [SPEC.stages[0], hires], "num_images": 2})
    with store.redis.pipeline() as pipe:
        pipe.multi()
        store.create(job_id, spec, pipe, owner="alice")
        pipe.execute()
    inputs = [init_image_key(job_id), handoff_key(job_id, 1, 0), handoff_key(job_id, 1, 1)]
    for key in inputs:
        store.redis.set(key, b"png")
    assert Lifecycle(store).end(job_id, JobStatus.SUCCEEDED, (JobStatus.QUEUED,)).applied
    assert store.redis.exists(*inputs) == 0


def test_end_from_a_status_not_allowed_changes_nothing(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    outcome = Lifecycle(store).end(job_id, JobStatus.SUCCEEDED, (JobStatus.RUNNING,))
    assert not outcome.applied
    assert outcome.previous is JobStatus.QUEUED
    assert store.redis.hget(METRICS_JOBS, "succeeded|m") is None


def test_the_webhook_is_owed_once_when_the_end_applies(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    spec = store.load(job_id).spec.model_copy(update={"webhook_url": AnyUrl("http://127.0.0.1:9/")})  # type: ignore[union-attr]
    store.redis.hset(f"imagegen:job:{job_id}", "spec", spec.model_dump_json())
    ends = Lifecycle(store, Webhooks(secret="s", allow_private=True))
    ends.end(job_id, JobStatus.CANCELED)
    ends.end(job_id, JobStatus.CANCELED)
    owed = store.load(job_id).webhook  # type: ignore[union-attr]
    assert owed is not None
    assert owed.event == "canceled"
    assert webhook_queue(store.redis).count == 1


def test_failure_callback_requeues_while_retries_are_left(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job(retries=1)
    store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,))
    job = rq_job(store.redis, job_id)
    on_rq_failure(job, store.redis, AbandonedJobError, AbandonedJobError(), None)
    assert store.field(job_id, "status") == "queued"


def test_failure_callback_fails_an_abandoned_job_without_retries(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job(retries=0)
    store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,))
    on_rq_failure(
        rq_job(store.redis, job_id), store.redis, AbandonedJobError, AbandonedJobError(), None
    )
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.FAILED
    assert envelope.error is not None
    assert envelope.error.type == "worker_lost"


def test_a_hard_timeout_fails_the_job_and_spends_its_retries(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job(retries=2)
    store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,))
    job = rq_job(store.redis, job_id)
    on_rq_failure(job, store.redis, JobTimeoutException, JobTimeoutException(), None)
    assert job.retries_left == 0  # RQ must not run a job again that ran out of time
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.error is not None
    assert envelope.error.type == "timeout"


def test_the_installed_lifecycle_lends_its_webhooks_to_the_callback(
    store: JobStore, queue_job: QueueJob
) -> None:
    try:
        job_id = queue_job(retries=0)
        spec = store.load(job_id).spec.model_copy(
            update={"webhook_url": AnyUrl("http://127.0.0.1:9/")}
        )  # type: ignore[union-attr]
        store.redis.hset(f"imagegen:job:{job_id}", "spec", spec.model_dump_json())
        store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,))
        lifecycle.install(Lifecycle(store, Webhooks(secret="s", allow_private=True)))
        on_rq_failure(rq_job(store.redis, job_id), store.redis, RuntimeError, RuntimeError(), None)
        envelope = store.load(job_id)
        assert envelope is not None
        assert envelope.webhook is not None
        assert envelope.webhook.event == "failed"
        assert envelope.error is not None
        assert envelope.error.type == "worker_error"
    finally:
        lifecycle.install(None)
