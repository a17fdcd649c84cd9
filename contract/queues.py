"""Where a job's work is queued, and what a queued RQ job looks like.

Models belong to worker *pools* (registry field `pool`, default "default"); each pool has one RQ
queue, and each worker serves exactly one pool. One queue per worker matters: RQ moves a job from
a single queue into an intermediate list atomically (BLMOVE), which its cleanup recovers after a
crash, but pops from several queues with BLPOP, where a crash between pop and registration loses
the job.

A job runs as one or more *segments*: maximal runs of stages served by one pool. The gateway
queues segment 0; the worker finishing segment k queues segment k+1 in the same transaction
that stores the pictures it hands over, so a job is never between queues.

Payloads are JSON (RQ's JSONSerializer): a worker never unpickles what is in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from rq import Callback, Queue, Retry
from rq.serializers import JSONSerializer

from contract.registry import ModelRegistry
from contract.spec import JobSpec

SERIALIZER = JSONSerializer
QUEUE_PREFIX = "imagegen"
RUN_JOB = "workers.tasks.run_job"
ON_FAILURE = "workers.tasks.on_rq_failure"
# RQ's own timeout is a backstop; the worker stops a job at its deadline first.
HARD_TIMEOUT_MARGIN_S = 30


def queue_name(pool: str) -> str:
    return f"{QUEUE_PREFIX}.{pool}"


def rq_job_id(job_id: str, segment: int) -> str:
    return job_id if segment == 0 else f"{job_id}-s{segment}"


@dataclass(frozen=True)
class Segment:
    start: int  # first stage (inclusive)
    end: int  # last stage (exclusive)
    pool: str


def plan_segments(spec: JobSpec, registry: ModelRegistry) -> list[Segment]:
    """Split the stages where the pool changes (only pixel handoffs may cross pools)."""
    pools = [registry.models[stage.model].pool for stage in spec.stages]
    segments: list[Segment] = []
    start = 0
    for i in range(1, len(pools) + 1):
        if i == len(pools) or pools[i] != pools[start]:
            segments.append(Segment(start, i, pools[start]))
            start = i
    return segments


@dataclass(frozen=True)
class QueuePolicy:
    timeout_s: int
    max_retries: int
    result_ttl_s: int


def enqueue_segment(
    redis: Redis, pipe: Pipeline, job_id: str, segment: int, pool: str, policy: QueuePolicy
) -> None:
    """Add the RQ job for one segment to `pipe` (which must be in MULTI mode)."""
    Queue(queue_name(pool), connection=redis, serializer=SERIALIZER).enqueue(
        RUN_JOB,
        job_id,
        segment,
        job_id=rq_job_id(job_id, segment),
        pipeline=pipe,
        job_timeout=policy.timeout_s + HARD_TIMEOUT_MARGIN_S,
        result_ttl=policy.result_ttl_s,
        failure_ttl=policy.result_ttl_s,
        retry=Retry(max=policy.max_retries) if policy.max_retries else None,
        on_failure=Callback(ON_FAILURE),
    )
