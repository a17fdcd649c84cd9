"""Finding jobs whose worker died, so that none stays `running` forever.

Workers refresh their started-registry entries every few seconds (see `workers.worker`); an entry
that stops being refreshed expires, and RQ's registry cleanup then retries the job, or fails it
once its retries are spent — both through `jobs.lifecycle.on_rq_failure`. RQ runs that cleanup
rarely (every 10 minutes by default), so workers and the gateway call `sweep` every few seconds:
the gateway's sweep recovers a job even when no worker of its pool is alive. A short lock makes
one sweeper act per interval: two concurrent cleanups could both retry the same job.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty

from jobs.caps import prune
from jobs.queues import SERIALIZER
from jobs.redis_keys import JANITOR_LOCK, QUEUE_PREFIX


def imagegen_queues(redis: Redis) -> list[Queue]:
    return [
        q
        for q in Queue.all(connection=redis, serializer=SERIALIZER)
        if q.name.startswith(f"{QUEUE_PREFIX}.")
    ]


def sweep(redis: Redis, interval_s: float) -> bool:
    """Clean every imagegen queue's started registry, unless another sweeper just did."""
    if not redis.set(JANITOR_LOCK, "1", nx=True, px=max(int(interval_s * 1000) - 50, 100)):
        return False
    for queue in imagegen_queues(redis):
        # Failure callbacks run under a timeout; the timer variant works off the main thread,
        # where sweeps run (RQ's default uses SIGALRM, which only the main thread may set).
        registry = StartedJobRegistry(
            queue=queue, serializer=SERIALIZER, death_penalty_class=TimerDeathPenalty
        )
        registry.cleanup()
    prune(redis)
    return True
