"""Caps on unfinished jobs, in total and per API key: the queue never grows without bound.

Admission adds a job to the outstanding set of all jobs and of its owner only while both are under
their caps (one Lua call, so concurrent admissions cannot overshoot); the final status transition
(`JobStore.transition`) removes it. The janitor prunes entries whose job vanished (expired, or lost
with a Redis that kept nothing), so a lost job cannot hold a slot forever.
"""

from __future__ import annotations

import time

from redis import Redis

from contract.envelope import FINAL_STATUSES
from jobs.redis_keys import (
    OUTSTANDING,
    OUTSTANDING_PER_OWNER_PATTERN,
    job_key,
    outstanding_key,
    text,
)

# KEYS[1] all, KEYS[2] this owner's; ARGV[1] total cap, ARGV[2] owner cap, ARGV[3] now, ARGV[4] id
_RESERVE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 'total' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 'owner' end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return false
"""


class QueueFull(Exception):
    def __init__(self, which: str, cap: int) -> None:
        scope = "for this API key" if which == "owner" else "on this deployment"
        super().__init__(f"{cap} unfinished jobs {scope} already; retry when some have finished")
        self.which = which


class Caps:
    def __init__(self, redis: Redis, total_cap: int, owner_cap: int) -> None:
        self.redis = redis
        self.total_cap = total_cap
        self.owner_cap = owner_cap
        self._reserve = redis.register_script(_RESERVE)

    def reserve(self, job_id: str, owner: str) -> None:
        """Take a slot, or raise QueueFull naming the cap that is full."""
        full = self._reserve(
            keys=[OUTSTANDING, outstanding_key(owner)],
            args=[self.total_cap, self.owner_cap, time.time(), job_id],
        )
        if full is not None:
            which = text(full)
            raise QueueFull(which, self.owner_cap if which == "owner" else self.total_cap)

    def release(self, job_id: str, owner: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(OUTSTANDING, job_id)
            pipe.zrem(outstanding_key(owner), job_id)
            pipe.execute()


def prune(redis: Redis, older_than_s: float = 60) -> int:
    """Drop slots of jobs that no longer exist or have finished without releasing them."""
    cutoff = time.time() - older_than_s
    ids = [text(i) for i in redis.zrangebyscore(OUTSTANDING, 0, cutoff)]  # type: ignore[arg-type]
    if not ids:
        return 0
    # One round trip for every candidate: a long backlog is checked at every sweep.
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(job_key(job_id), ["status", "owner"])
        found = pipe.execute()
    stale = [
        (job_id, text(owner) if owner else "")
        for job_id, (status, owner) in zip(ids, found, strict=True)
        if status is None or text(status) in FINAL_STATUSES
    ]
    owner_sets = None
    with redis.pipeline(transaction=False) as pipe:
        for job_id, owner in stale:
            pipe.zrem(OUTSTANDING, job_id)
            if owner:
                pipe.zrem(outstanding_key(owner), job_id)
            else:  # the hash is gone: we do not know whose it was
                if owner_sets is None:
                    owner_sets = list(redis.scan_iter(OUTSTANDING_PER_OWNER_PATTERN))
                for key in owner_sets:
                    pipe.zrem(key, job_id)
        pipe.execute()
    return len(stale)
