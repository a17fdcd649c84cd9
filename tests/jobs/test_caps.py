"""Queue-cap slots: taken at admission, freed at the end, and pruned when a job vanished."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from jobs.caps import Caps, QueueFull, prune
from jobs.redis_keys import OUTSTANDING, job_key


def test_reserve_refuses_past_either_cap_and_release_frees_the_slot(redis: Redis) -> None:
    caps = Caps(redis, total_cap=3, owner_cap=2)
    caps.reserve("a1", "alice")
    caps.reserve("a2", "alice")
    with pytest.raises(QueueFull) as owner_full:
        caps.reserve("a3", "alice")
    assert owner_full.value.which == "owner"
    caps.reserve("b1", "bob")
    with pytest.raises(QueueFull) as total_full:
        caps.reserve("b2", "bob")
    assert total_full.value.which == "total"
    caps.release("a1", "alice")
    caps.reserve("a3", "alice")
    assert redis.zcard(OUTSTANDING) == 3


def test_prune_frees_the_slots_of_vanished_and_finished_jobs_only(redis: Redis) -> None:
    caps = Caps(redis, total_cap=10, owner_cap=10)
    for job_id in ("vanished", "finished", "running", "young"):
        caps.reserve(job_id, "alice")
    old = time.time() - 120
    for job_id in ("vanished", "finished", "running"):
        redis.zadd(OUTSTANDING, {job_id: old})
    redis.hset(job_key("finished"), mapping={"status": "succeeded", "owner": "alice"})
    redis.hset(job_key("running"), mapping={"status": "running", "owner": "alice"})

    assert prune(redis) == 2
    assert {m.decode() for m in redis.zrange(OUTSTANDING, 0, -1)} == {"running", "young"}
    assert {m.decode() for m in redis.zrange(f"{OUTSTANDING}:alice", 0, -1)} == {"running", "young"}
    assert prune(redis) == 0
