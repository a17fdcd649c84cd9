"""What a queued RQ job looks like: one per segment of a job, on its pool's queue.

Models belong to worker *pools* (registry field `pool`); each pool has one RQ queue, and each
worker serves exactly one pool. One queue per worker matters: RQ moves a job from a single queue
into an intermediate list atomically (BLMOVE), which its cleanup recovers after a crash, but pops
from several queues with BLPOP, where a crash between pop and registration loses the job.

The gateway queues segment 0 (`contract.segments`); the worker finishing segment k queues
segment k+1 in the same transaction that stores the pictures it hands over, so a job is never
between queues.

Payloads are JSON (RQ's JSONSerializer): a worker never unpickles what is in Redis. The function
and the failure callback are named as strings: the worker's function is imported only by the
worker; the callback lives in `jobs.lifecycle`, so any process that finds a failure (the gateway's
janitor included) can run it without importing `workers` or torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from rq import Callback, Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.redis_keys import queue_name, rq_job_id
from jobs.store import note_rq_job
from jobs.turns import take_turn

log = logging.getLogger("imagegen.jobs")

SERIALIZER = JSONSerializer
RUN_JOB = "workers.tasks.run_job"
ON_FAILURE = "jobs.lifecycle.on_rq_failure"
# RQ's own timeout is a backstop; the worker stops a job at its deadline first.
HARD_TIMEOUT_MARGIN_S = 30
# Nothing reads an RQ result: the job's record is its result. Kept for the result TTL, RQ's job
# hash and result stream held 6.4 KiB per finished job, four times the record; the janitor tells
# a returned call by the record's `finishing:<segment>` instead. One second, not 0: RQ 2.12
# deletes a job kept 0 s through its execution registry, which raises ValueError (and fails the
# job) when a killed worker's execution is listed there and has expired.
RQ_RESULT_TTL_S = 1


@dataclass(frozen=True)
class QueuePolicy:
    timeout_s: int
    max_retries: int
    result_ttl_s: int


def pool_queue(redis: Redis, pool: str) -> Queue:
    return Queue(queue_name(pool), connection=redis, serializer=SERIALIZER)


def enqueue_segment(
    redis: Redis,
    pipe: Pipeline,
    job_id: str,
    segment: int,
    pool: str,
    policy: QueuePolicy,
    owner: str,
) -> None:
    """Add the RQ job for one segment to `pipe` (which must be in MULTI mode), at the place its
    owner's turn gives it (`jobs.turns`), and note it in the job's record: the janitor checks
    that it still exists."""
    note_rq_job(pipe, job_id, rq_job_id(job_id, segment))
    pool_queue(redis, pool).enqueue(
        RUN_JOB,
        job_id,
        segment,
        job_id=rq_job_id(job_id, segment),
        pipeline=pipe,
        job_timeout=policy.timeout_s + HARD_TIMEOUT_MARGIN_S,
        result_ttl=RQ_RESULT_TTL_S,
        failure_ttl=policy.result_ttl_s,  # failed ones stay for operators (rq info, dashboard)
        retry=Retry(max=policy.max_retries) if policy.max_retries else None,
        on_failure=Callback(ON_FAILURE),
    )
    take_turn(pipe, pool, owner, rq_job_id(job_id, segment))


def cancel_rq_job(redis: Redis, rq_job: str) -> None:
    """File a job that has ended canceled or failed as canceled in RQ too, and take it off its
    queue, so that RQ's own tools agree with the API. Best effort: the envelope is already
    final, and a worker that takes the RQ job meanwhile finds it so and does nothing."""
    try:
        Job.fetch(rq_job, connection=redis, serializer=SERIALIZER).cancel()
    except (NoSuchJobError, InvalidJobOperation):
        pass  # gone already, or RQ has it canceled already
    except Exception:
        # Only RQ's bookkeeping failed. Its cancel races a worker that is dequeuing the job
        # (ValueError: "Execution ... not found"): that must not fail the caller.
        log.warning("RQ could not file %s as canceled", rq_job, exc_info=True)
