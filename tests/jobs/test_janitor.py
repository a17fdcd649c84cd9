"""The janitor: abandoned jobs (a started-registry entry nobody refreshes) are retried, then
failed; one sweeper acts per interval."""

from __future__ import annotations

from jobs.janitor import sweep
from jobs.queues import pool_queue
from jobs.redis_keys import JANITOR_LOCK
from jobs.store import JobStore
from tests.helpers import abandon
from tests.jobs.conftest import POOL, QueueJob


def test_an_abandoned_job_is_queued_again_then_failed_when_retries_run_out(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job(retries=1)
    abandon(store.redis, job_id, POOL)
    assert sweep(store.redis, interval_s=0.001)
    assert store.field(job_id, "status") == "queued"
    assert job_id in pool_queue(store.redis, POOL).get_job_ids()

    abandon(store.redis, job_id, POOL)
    store.redis.delete(JANITOR_LOCK)
    assert sweep(store.redis, interval_s=0.001)
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.status.value == "failed"
    assert envelope.error is not None
    assert envelope.error.type == "worker_lost"


def test_one_sweeper_acts_per_interval(store: JobStore) -> None:
    assert sweep(store.redis, interval_s=5)
    assert not sweep(store.redis, interval_s=5)
