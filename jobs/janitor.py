"""Finding jobs that would otherwise never end, so that none stays `queued` or `running` forever.

1. A worker died. Workers refresh their started-registry entries every few seconds (see
   `workers.worker`); an entry that stops being refreshed expires, and RQ's registry cleanup then
   retries the job, or fails it once its retries are spent — both through
   `jobs.lifecycle.on_rq_failure`. RQ runs that cleanup rarely (every 10 minutes by default), so
   workers and the gateway call `sweep` every few seconds: the gateway's sweep recovers a job even
   when no worker of its pool is alive.
2. Its RQ job was deleted from under the service (rq-dashboard's Delete or "empty queue", a
   manual `DEL`): no worker will ever run it. The sweep fails it, `queue_entry_lost`.
3. Its record no longer parses (written by another version, edited by hand): readers already
   serve it as failed; the sweep ends it, `record_unreadable`.
4. It waits between segments in a pool's queue that no worker takes: it is `running`, but no
   step monitor watches it. The sweep keeps its cancel (`canceled`) and its deadline (`timeout`).

5. Its worker made its pictures and died before storing them (`workers.segments.finisher`
   stores them after the job's RQ call returned): the job is queued again.

The sweep also puts webhook attempts whose backoff is over on the webhook queue, and, where the
pictures live in object storage, deletes the objects of jobs whose result TTL has run out
(`jobs.pictures`).

Checks 2 to 4 read each unfinished job's record: a sweep reads at most `BATCH` of them, going on
from where the last sweep stopped, so with up to `BATCH` unfinished jobs every one is checked by
every sweep, and with more, within a few. A short lock makes one sweeper act per interval: two
concurrent cleanups could both retry the same job.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from contract.envelope import FINAL_STATUSES, FailureType, JobEnvelope, JobStatus
from jobs.caps import prune
from jobs.lifecycle import Lifecycle
from jobs.pictures import sweep_pictures
from jobs.queues import SERIALIZER, QueuePolicy, cancel_rq_job, enqueue_segment
from jobs.redis_keys import (
    JANITOR_CURSOR,
    JANITOR_LOCK,
    OUTSTANDING,
    QUEUE_PREFIX,
    claim_key,
    job_key,
    text,
)
from jobs.store import envelope_from_hash, finishing_field, now
from jobs.webhooks import queue_due_attempts

log = logging.getLogger("imagegen.jobs")

BATCH = 500


def imagegen_queues(redis: Redis) -> list[Queue]:
    """The pools' queues and the webhook queue."""
    return [
        q
        for q in Queue.all(connection=redis, serializer=SERIALIZER)
        if q.name.startswith(f"{QUEUE_PREFIX}.")  # the webhook queue's too: imagegen.webhooks
    ]


def sweep(lifecycle: Lifecycle, interval_s: float) -> bool:
    """Clean every imagegen queue's started registry, check a batch of unfinished jobs and
    queue due webhook attempts, unless another sweeper just did."""
    redis = lifecycle.store.redis
    if not redis.set(JANITOR_LOCK, "1", nx=True, px=max(int(interval_s * 1000) - 50, 100)):
        return False
    for queue in imagegen_queues(redis):
        # Failure callbacks run under a timeout; the timer variant works off the main thread,
        # where sweeps run (RQ's default uses SIGALRM, which only the main thread may set).
        registry = StartedJobRegistry(
            queue=queue, serializer=SERIALIZER, death_penalty_class=TimerDeathPenalty
        )
        registry.cleanup()
    check_unfinished(lifecycle)
    prune(redis)
    queue_due_attempts(redis)
    if lifecycle.store.pictures is not None:
        sweep_pictures(redis, lifecycle.store.pictures)
    return True


def check_unfinished(lifecycle: Lifecycle, batch: int = BATCH) -> list[str]:
    """Fail the unfinished jobs of the next batch whose record no longer parses or whose RQ job
    is gone; return their ids."""
    redis = lifecycle.store.redis
    job_ids = _next_batch(redis, batch)
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        records: list[dict[bytes, bytes]] = pipe.execute()
    ended = []
    for job_id, raw in zip(job_ids, records, strict=True):
        if not raw or text(raw.get(b"status", b"")) in FINAL_STATUSES:
            continue  # gone (the caps' prune drops it) or finished since
        rq_job = text(raw[b"rq_job"]) if b"rq_job" in raw else None
        envelope = envelope_from_hash(job_id, raw)
        if lifecycle.fail_unreadable(job_id, envelope) or _stranded(
            lifecycle, job_id, envelope, rq_job
        ):
            ended.append(job_id)
    return ended


def _stranded(lifecycle: Lifecycle, job_id: str, envelope: JobEnvelope, rq_job: str | None) -> bool:
    if rq_job is None:  # recorded before the field existed
        return False
    return (
        _rq_job_lost(lifecycle, job_id, rq_job)
        or _ended_while_waiting(lifecycle, envelope, rq_job)
        or _finisher_lost(lifecycle, envelope, rq_job)
    )


def _segment_of(job_id: str, rq_job: str) -> int:
    return 0 if rq_job == job_id else int(rq_job.rsplit("-s", 1)[1])


def _finisher_lost(lifecycle: Lifecycle, envelope: JobEnvelope, rq_job: str) -> bool:
    """A worker made a job's pictures and died before storing them (`workers.segments.finisher`):
    its RQ call returned (RQ deleted its job: it will not run it again; the record says
    `finishing:<segment>`), the job is `running`, and the claim its finisher held has expired.
    Queue the segment again. Returns False: the job goes on."""
    redis = lifecycle.store.redis
    job_id = str(envelope.id)
    if envelope.status is not JobStatus.RUNNING or envelope.spec is None:
        return False
    segment = _segment_of(job_id, rq_job)
    pool = redis.hget(job_key(job_id), finishing_field(segment))
    if pool is None:
        return False
    if redis.hget(Job.key_for(rq_job), "status") not in (None, b"finished"):
        return False  # its call has not returned yet, or it is queued again already
    if redis.exists(claim_key(job_id, segment)):
        return False  # its finisher is still at it
    store = lifecycle.store
    now_rq_job, now_status = redis.hmget(job_key(job_id), ["rq_job", "status"])
    if now_rq_job != rq_job.encode() or now_status != b"running":
        return False  # handed to its next segment, or finished, since the record was read
    retries = int(store.field(job_id, "max_retries") or 0)
    policy = QueuePolicy(envelope.spec.timeout_s, retries, store.result_ttl_s)
    owner = store.field(job_id, "owner") or ""
    with redis.pipeline() as pipe:
        pipe.multi()
        store.forget_finishing(pipe, job_id, segment)
        enqueue_segment(redis, pipe, job_id, segment, text(pool), policy, owner)
        pipe.execute()
    log.warning("job %s: its worker died before storing its pictures; queued again", job_id)
    return False


# RQ statuses of a job that no worker has taken.
_WAITING = frozenset({b"queued", b"deferred", b"scheduled"})


def _ended_while_waiting(lifecycle: Lifecycle, envelope: JobEnvelope, rq_job: str) -> bool:
    """A job between segments is `running` while it waits in its next pool's queue, where no
    worker's step monitor watches it: if that pool has no live worker it would wait forever.
    Its cancel and its deadline are kept here."""
    redis = lifecycle.store.redis
    job_id = str(envelope.id)
    if envelope.status is not JobStatus.RUNNING or envelope.spec is None:
        return False
    if redis.hget(Job.key_for(rq_job), "status") not in _WAITING:
        return False  # a worker has it: its monitor stops it at a cancel or the deadline
    limit = envelope.spec.timeout_s
    if lifecycle.store.cancel_requested(job_id):
        outcome = lifecycle.end(job_id, JobStatus.CANCELED, (JobStatus.RUNNING,))
    elif limit and envelope.started_at and now() > envelope.started_at + timedelta(seconds=limit):
        outcome = lifecycle.fail(
            job_id,
            FailureType.TIMEOUT,
            f"the job ran past its {limit} s limit while waiting for a worker of its next "
            "pool (none took it); check that the pool's workers are running",
            (JobStatus.RUNNING,),
        )
    else:
        return False
    if outcome.applied:
        log.warning("job %s ended while it waited in %s's queue", job_id, rq_job)
        cancel_rq_job(redis, rq_job)
    return outcome.applied


def _next_batch(redis: Redis, batch: int) -> list[str]:
    """The next `batch` unfinished jobs by creation time, after the last one the previous sweep
    checked (a cursor of score and id: the set changes between sweeps); at the end, wrap."""
    cursor: dict[bytes, bytes] = redis.hgetall(JANITOR_CURSOR)  # type: ignore[assignment]
    after = (float(cursor[b"score"]), text(cursor[b"id"])) if cursor else (float("-inf"), "")
    rows: list[tuple[bytes, float]] = redis.zrange(  # type: ignore[assignment]
        OUTSTANDING, after[0], "+inf", byscore=True, offset=0, num=batch, withscores=True
    )
    if len(rows) < batch:
        redis.delete(JANITOR_CURSOR)
    else:
        redis.hset(JANITOR_CURSOR, mapping={"score": rows[-1][1], "id": rows[-1][0]})
    return [text(m) for m, score in rows if (score, text(m)) > after]


def _rq_job_lost(lifecycle: Lifecycle, job_id: str, rq_job: str) -> bool:
    redis = lifecycle.store.redis
    if redis.exists(Job.key_for(rq_job)):
        return False
    if redis.hexists(job_key(job_id), finishing_field(_segment_of(job_id, rq_job))):
        # RQ deleted it when its call returned, and a finisher stores the job (or its worker
        # died doing so: `_finisher_lost`).
        return False
    # A worker may have handed the job to its next segment since the record was read.
    if lifecycle.store.field(job_id, "rq_job") != rq_job:
        return False
    log.warning("job %s: its RQ job %s was deleted; failing it", job_id, rq_job)
    return lifecycle.fail(
        job_id,
        FailureType.QUEUE_ENTRY_LOST,
        "the job's queue entry was deleted (an operator removed it from the RQ queue), so no "
        "worker will run it; submit it again",
    ).applied
