"""The janitor: abandoned jobs (a started-registry entry nobody refreshes) are retried, then
failed; a job whose RQ job was deleted, or whose record no longer parses, is failed by the next
sweep; one sweeper acts per interval."""

from __future__ import annotations

from datetime import timedelta

from rq.job import Job

from contract.envelope import JobStatus
from jobs.janitor import check_unfinished, sweep
from jobs.lifecycle import Lifecycle
from jobs.queues import SERIALIZER, QueuePolicy, enqueue_segment, pool_queue
from jobs.redis_keys import JANITOR_LOCK, claim_key, job_key, rq_job_id
from jobs.store import JobStore, now
from tests.helpers import abandon
from tests.jobs.conftest import POOL, QueueJob


def test_an_abandoned_job_is_queued_again_then_failed_when_retries_run_out(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job(retries=1)
    abandon(store.redis, job_id, POOL)
    assert sweep(lifecycle, interval_s=0.001)
    assert store.field(job_id, "status") == "queued"
    assert job_id in pool_queue(store.redis, POOL).get_job_ids()

    abandon(store.redis, job_id, POOL)
    store.redis.delete(JANITOR_LOCK)
    assert sweep(lifecycle, interval_s=0.001)
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.status.value == "failed"
    assert envelope.error is not None
    assert envelope.error.type == "worker_lost"


def test_one_sweeper_acts_per_interval(lifecycle: Lifecycle) -> None:
    assert sweep(lifecycle, interval_s=5)
    assert not sweep(lifecycle, interval_s=5)


def test_a_job_whose_rq_job_was_deleted_fails_at_the_next_sweep(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    deleted, emptied, kept = queue_job(), queue_job(), queue_job()
    # rq-dashboard's Delete is Job.delete(); a manual `DEL rq:job:<id>` leaves the id queued.
    Job.fetch(deleted, connection=store.redis, serializer=SERIALIZER).delete()
    store.redis.delete(Job.key_for(emptied))

    assert sweep(lifecycle, interval_s=0.001)

    for job_id in (deleted, emptied):
        envelope = store.load(job_id)
        assert envelope is not None
        assert envelope.error is not None
        assert envelope.status is JobStatus.FAILED
        assert envelope.error.type == "queue_entry_lost"
        assert "submit it again" in envelope.error.message
    assert store.field(kept, "status") == "queued"


def test_a_job_handed_to_its_next_segment_is_not_taken_for_lost(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    # Between the sweep's read and its check, a worker moved the job on to segment 1.
    store.redis.hset(job_key(job_id), "rq_job", f"{job_id}-s1")
    store.redis.delete(Job.key_for(job_id))
    assert check_unfinished(lifecycle) == [job_id]  # segment 1's RQ job does not exist either

    later = queue_job()
    store.redis.delete(Job.key_for(later))
    original = store.redis.hget

    def moved_on(name: str, key: str) -> object:  # the hand-over lands during the sweep
        if key == "rq_job":
            return f"{later}-s1".encode()
        return original(name, key)

    store.redis.hget = moved_on  # type: ignore[method-assign]
    try:
        assert check_unfinished(lifecycle) == []
    finally:
        del store.redis.hget
    assert store.field(later, "status") == "queued"


def test_an_unreadable_record_is_served_failed_and_the_sweep_ends_it(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    bad_spec, bad_status = queue_job(), queue_job()
    # What an older version, or a hand edit, leaves behind.
    store.redis.hset(job_key(bad_spec), "spec", '{"prompt": 3}')
    store.redis.hset(job_key(bad_status), "status", "paused")

    for job_id, field in ((bad_spec, "spec"), (bad_status, "status")):
        served = store.load(job_id)
        assert served is not None
        assert served.error is not None
        assert served.status is JobStatus.FAILED
        assert served.error.type == "record_unreadable"
        assert f"broken: {field}" in served.error.message

    assert sweep(lifecycle, interval_s=0.001)

    assert store.field(bad_spec, "status") == "failed"
    assert store.field(bad_status, "status") == "failed"
    assert store.redis.zcard("imagegen:outstanding") == 0  # their cap slots are free again


def test_a_sweep_checks_a_batch_and_the_next_one_goes_on_from_there(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    jobs = [queue_job() for _ in range(3)]
    for job_id in jobs:
        store.redis.delete(Job.key_for(job_id))
    first = check_unfinished(lifecycle, batch=2)
    second = check_unfinished(lifecycle, batch=2)
    assert len(first) == 2
    assert sorted(first + second) == sorted(jobs)


def hand_over(store: JobStore, job_id: str, started_ago_s: float) -> str:
    """What a worker leaves when it hands a job to the next pool: `running`, segment 1 queued
    there (where, in these tests, no worker takes it)."""
    started = now() - timedelta(seconds=started_ago_s)
    store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,), started_at=started)
    with store.redis.pipeline() as pipe:
        pipe.multi()
        enqueue_segment(store.redis, pipe, job_id, 1, "unserved", QueuePolicy(60, 1, 60), "alice")
        pipe.execute()
    return rq_job_id(job_id, 1)


def test_a_cancel_holds_for_a_job_waiting_in_a_pool_no_worker_serves(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    """Found by a hostile pass: cancel answered 202 and the job stayed `running` forever."""
    job_id = queue_job()
    waiting = hand_over(store, job_id, started_ago_s=1)
    store.request_cancel(job_id)
    assert check_unfinished(lifecycle) == [job_id]
    assert store.field(job_id, "status") == "canceled"
    rq_job = Job.fetch(waiting, connection=store.redis, serializer=SERIALIZER)
    assert rq_job.get_status() == "canceled"  # and off the queue


def test_a_deadline_holds_for_a_job_waiting_in_a_pool_no_worker_serves(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    on_time, late = queue_job(), queue_job()  # the fixture's spec: timeout_s 60
    hand_over(store, on_time, started_ago_s=10)
    hand_over(store, late, started_ago_s=61)
    assert check_unfinished(lifecycle) == [late]
    envelope = store.load(late)
    assert envelope is not None
    assert envelope.error is not None
    assert (envelope.status, envelope.error.type) == (JobStatus.FAILED, "timeout")
    assert "next pool" in envelope.error.message
    assert store.field(on_time, "status") == "running"


def test_a_job_a_worker_is_running_is_left_to_its_monitor(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    waiting = hand_over(store, job_id, started_ago_s=61)
    Job.fetch(waiting, connection=store.redis, serializer=SERIALIZER).set_status("started")
    store.request_cancel(job_id)
    assert check_unfinished(lifecycle) == []
    assert store.field(job_id, "status") == "running"


def test_a_job_whose_worker_died_before_storing_its_pictures_is_queued_again(
    lifecycle: Lifecycle, store: JobStore, queue_job: QueueJob
) -> None:
    lost, storing = queue_job(), queue_job()
    queue = pool_queue(store.redis, POOL)
    for job_id in (lost, storing):
        # A worker ran it and its RQ call returned (RQ deleted its job, as it does with no
        # result to keep); the finisher thread was to store the PNGs.
        store.transition(
            job_id, JobStatus.RUNNING, (JobStatus.QUEUED,), worker="w", started_at=now()
        )
        store.note_finishing(job_id, 0, POOL)
        queue.remove(job_id)
        store.redis.delete(Job.key_for(job_id))
    store.redis.set(claim_key(storing, 0), "w", px=5000)  # that finisher is alive
    assert check_unfinished(lifecycle) == []  # neither is ended: one waits, one goes again
    assert queue.get_job_ids() == [lost]
    assert store.redis.hget(Job.key_for(lost), "status") == b"queued"
    assert store.field(lost, "status") == "running"
    assert check_unfinished(lifecycle) == []  # queued once: not again at the next sweep
    assert queue.get_job_ids() == [lost]
