"""Caps on unfinished jobs, in total and per API key: the queue never grows without bound, and
one key cannot lock the others out.

Each configured key has `reserved` slots of the total that only it may use; the rest of the total
is shared, first come, first served. A job takes one of its key's reserved slots while it has one
free, else a shared slot (also listed in the shared sets), else it is refused — so a key that
fills the shared part still leaves every other key its reserved slots (a hostile pass saw one
key lock out every other with a plain global cap).

Admission adds a job to the outstanding set of all jobs and of its owner only while the caps
allow (one Lua call, so concurrent admissions cannot overshoot); the final status transition
(`JobStore.transition`) removes it. The janitor prunes entries whose job vanished (expired, or lost
with a Redis that kept nothing), so a lost job cannot hold a slot forever.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.client import Pipeline

from contract.envelope import FINAL_STATUSES
from jobs.redis_keys import (
    OUTSTANDING,
    OUTSTANDING_PER_OWNER_PATTERN,
    SHARED_SLOTS,
    SHARED_SLOTS_PER_OWNER_PATTERN,
    job_key,
    outstanding_key,
    shared_slots_key,
    text,
)

# KEYS: all outstanding, the owner's, all shared slots, the owner's shared slots. ARGV: total cap,
# owner cap, reserved slots per key, shared slots, now, job id.
_RESERVE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 'total' end
local mine = redis.call('ZCARD', KEYS[2])
if mine >= tonumber(ARGV[2]) then return 'owner' end
if mine - redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[3]) then
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then return 'shared' end
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return false
"""


class QueueFull(Exception):
    def __init__(self, which: str, cap: int, reserved: int = 0) -> None:
        message = {
            "owner": f"{cap} unfinished jobs for this API key already",
            "total": f"{cap} unfinished jobs on this deployment already",
            "shared": f"this key's {reserved} reserved slots and all {cap} shared ones are in use",
        }[which]
        super().__init__(f"{message}; retry when some have finished")
        self.which = which


class Caps:
    def __init__(
        self, redis: Redis, total_cap: int, owner_cap: int, reserved: int = 0, keys: int = 1
    ) -> None:
        """`reserved` slots of `total_cap` for each of the deployment's `keys`."""
        if reserved * keys >= total_cap:
            raise ValueError(
                f"{keys} keys × {reserved} reserved slots leave nothing of the {total_cap} "
                "unfinished jobs to share: lower the reservation or raise the total"
            )
        self.redis = redis
        self.total_cap = total_cap
        self.owner_cap = owner_cap
        self.reserved = reserved
        self.shared = total_cap - reserved * keys
        self._reserve = redis.register_script(_RESERVE)

    def reserve(self, job_id: str, owner: str) -> None:
        """Take a slot, or raise QueueFull naming the cap that is full."""
        full = self._reserve(
            keys=[OUTSTANDING, outstanding_key(owner), SHARED_SLOTS, shared_slots_key(owner)],
            args=[self.total_cap, self.owner_cap, self.reserved, self.shared, time.time(), job_id],
        )
        if full is not None:
            which = text(full)
            cap = {"owner": self.owner_cap, "total": self.total_cap, "shared": self.shared}[which]
            raise QueueFull(which, cap, self.reserved)

    def release(self, job_id: str, owner: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            free(pipe, job_id, owner)
            pipe.execute()


def free(pipe: Pipeline, job_id: str, owner: str) -> None:
    """Give the job's slots back (in the caller's pipeline or transaction)."""
    pipe.zrem(OUTSTANDING, job_id)
    pipe.zrem(outstanding_key(owner), job_id)
    pipe.zrem(SHARED_SLOTS, job_id)
    pipe.zrem(shared_slots_key(owner), job_id)


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
            if owner:
                free(pipe, job_id, owner)
            else:  # the hash is gone: we do not know whose it was
                pipe.zrem(OUTSTANDING, job_id)
                pipe.zrem(SHARED_SLOTS, job_id)
                if owner_sets is None:
                    owner_sets = [
                        *redis.scan_iter(OUTSTANDING_PER_OWNER_PATTERN),
                        *redis.scan_iter(SHARED_SLOTS_PER_OWNER_PATTERN),
                    ]
                for key in owner_sets:
                    pipe.zrem(key, job_id)
        pipe.execute()
    return len(stale)
