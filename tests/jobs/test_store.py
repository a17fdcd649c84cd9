"""The job store: compare-and-set status changes that tell listeners, declared keys only, and
envelopes read back as they were written."""

from __future__ import annotations

import ast

from redis import Redis

from contract.envelope import JobStatus, Progress
from jobs.redis_keys import cancel_key, events_channel, image_key, job_key
from jobs.settings import REPO_ROOT
from jobs.store import JobStore
from tests.jobs.conftest import SPEC, QueueJob


def test_a_created_job_reads_back_as_a_queued_envelope(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    found = store.load_with_owner(job_id)
    assert found is not None
    envelope, owner = found
    assert (str(envelope.id), envelope.status, owner) == (job_id, JobStatus.QUEUED, "alice")
    assert envelope.spec == SPEC
    assert store.load("no-such-job") is None


def test_transition_is_a_compare_and_set_that_publishes(
    store: JobStore, queue_job: QueueJob
) -> None:
    job_id = queue_job()
    pubsub = store.redis.pubsub()
    pubsub.subscribe(events_channel(job_id))
    pubsub.get_message(timeout=1)  # the subscription confirmation
    applied = store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,), worker="w1")
    assert applied.applied
    assert applied.previous is JobStatus.QUEUED
    refused = store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,), worker="w2")
    assert not refused.applied
    assert store.field(job_id, "worker") == "w1"
    message = pubsub.get_message(timeout=1)
    assert message is not None
    assert message["data"] == b"running"
    assert not store.transition("gone", JobStatus.RUNNING, (JobStatus.QUEUED,)).applied


def test_a_final_status_starts_the_result_ttl(store: JobStore, queue_job: QueueJob) -> None:
    job_id = queue_job()
    assert store.redis.ttl(job_key(job_id)) == -1
    store.transition(job_id, JobStatus.CANCELED, (JobStatus.QUEUED,))
    assert 0 < store.redis.ttl(job_key(job_id)) <= store.result_ttl_s


def test_progress_images_and_the_cancel_flag(
    store: JobStore, queue_job: QueueJob, redis: Redis
) -> None:
    job_id = queue_job()
    progress = Progress(stage=1, stages=1, step=2, steps=4, fraction=0.5)
    store.set_progress(job_id, progress)
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.progress == progress
    store.store_images(job_id, [b"png-0", b"png-1"])
    assert store.image(job_id, 1) == b"png-1"
    assert store.image(job_id, 2) is None
    assert 0 < redis.ttl(image_key(job_id, 0)) <= store.result_ttl_s
    assert not store.cancel_requested(job_id)
    store.request_cancel(job_id)
    assert store.cancel_requested(job_id)
    assert redis.exists(cancel_key(job_id))


def test_a_cancel_requested_before_the_job_finished_wins_over_its_success(
    store: JobStore, queue_job: QueueJob
) -> None:
    """Found by a hostile pass: cancel answered 202 and the job ended `succeeded` (3 in 75)."""
    job_id = queue_job()
    assert store.transition(job_id, JobStatus.RUNNING, (JobStatus.QUEUED,)).applied
    store.request_cancel(job_id)  # the gateway's 202: the worker had not finished yet
    images = [{"index": 0, "url": "/x", "width": 64, "height": 64, "seed": 1}]
    assert store.transition(
        job_id, JobStatus.SUCCEEDED, (JobStatus.RUNNING,), images=images
    ).applied
    envelope = store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.CANCELED
    assert envelope.images == []
    assert envelope.finished_at is None  # only finished_at would have been written: none given

    finished = queue_job()  # no cancel asked: a success is a success
    store.transition(finished, JobStatus.RUNNING, (JobStatus.QUEUED,))
    store.transition(finished, JobStatus.SUCCEEDED, (JobStatus.RUNNING,), images=images)
    done = store.load(finished)
    assert done is not None
    assert (done.status, len(done.images)) == (JobStatus.SUCCEEDED, 1)


JOB_KEYS = {"job_key", "init_image_key", "handoff_key", "image_key", "cancel_key"}
WRITES = {"set", "setex", "hset", "hsetnx", "hincrby", "hdel", "delete", "unlink", "expire",
          "persist", "rpush", "lpush", "incr"}  # fmt: skip


def test_nothing_but_the_store_writes_a_jobs_keys() -> None:
    """The record, its init image, handoff pictures, trace, attempts, PNGs and cancel flag have
    one writer, whatever module holds the Redis connection."""
    writers = []
    for layer in ("app", "jobs", "workers", "devstack"):
        for path in sorted((REPO_ROOT / layer).rglob("*.py")):
            if path == REPO_ROOT / "jobs" / "store.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in WRITES
                    and node.args
                ):
                    continue
                key = node.args[0]
                if (
                    isinstance(key, ast.Call)
                    and isinstance(key.func, ast.Name)
                    and key.func.id in JOB_KEYS
                ):
                    writers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert writers == []
