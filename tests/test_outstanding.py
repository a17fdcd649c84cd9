"""Queue-cap slots: taken at admission, freed at the end, and pruned when a job vanished."""

from __future__ import annotations

import time

from redis import Redis

from contract.outstanding import Outstanding, prune
from contract.redis_layout import OUTSTANDING, job_key


def test_prune_frees_the_slots_of_vanished_and_finished_jobs_only(redis: Redis) -> None:
    caps = Outstanding(redis, total_cap=10, owner_cap=10)
    for job_id in ("vanished", "finished", "running", "young"):
        assert caps.reserve(job_id, "alice") is None
    old = time.time() - 120
    for job_id in ("vanished", "finished", "running"):
        redis.zadd(OUTSTANDING, {job_id: old})
    redis.hset(job_key("finished"), mapping={"status": "succeeded", "owner": "alice"})
    redis.hset(job_key("running"), mapping={"status": "running", "owner": "alice"})

    assert prune(redis) == 2
    assert {m.decode() for m in redis.zrange(OUTSTANDING, 0, -1)} == {"running", "young"}
    assert {m.decode() for m in redis.zrange(f"{OUTSTANDING}:alice", 0, -1)} == {"running", "young"}
    assert prune(redis) == 0
