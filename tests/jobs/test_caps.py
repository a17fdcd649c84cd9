"""Queue-cap slots: taken at admission, freed at the end, and pruned when a job vanished."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from jobs.caps import Caps, QueueFull, prune
from jobs.redis_keys import OUTSTANDING, SHARED_SLOTS, job_key


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


def test_one_key_filling_the_shared_slots_leaves_the_others_their_reserved_ones(
    redis: Redis,
) -> None:
    # Found by a hostile pass: one key filled the global cap and locked every other key out.
    caps = Caps(redis, total_cap=10, owner_cap=10, reserved=2, keys=3)  # 4 shared
    for n in range(6):  # alice: her 2 reserved and all 4 shared
        caps.reserve(f"a{n}", "alice")
    with pytest.raises(QueueFull) as full:
        caps.reserve("a6", "alice")
    assert full.value.which == "shared"
    assert "reserved" in str(full.value)
    for owner in ("bob", "carol"):
        caps.reserve(f"{owner}1", owner)
        caps.reserve(f"{owner}2", owner)
        with pytest.raises(QueueFull):
            caps.reserve(f"{owner}3", owner)  # nothing shared is left
    # A shared slot given back is anyone's again.
    caps.release("a5", "alice")
    caps.reserve("bob3", "bob")


def test_a_reserved_slot_given_back_is_taken_before_a_shared_one(redis: Redis) -> None:
    caps = Caps(redis, total_cap=10, owner_cap=10, reserved=1, keys=2)
    caps.reserve("a1", "alice")  # reserved
    caps.reserve("a2", "alice")  # shared
    caps.release("a1", "alice")
    caps.reserve("a3", "alice")  # her reserved slot again, not a second shared one
    assert redis.zcard(SHARED_SLOTS) == 1


def test_reservations_must_leave_something_to_share(redis: Redis) -> None:
    with pytest.raises(ValueError, match="leave nothing"):
        Caps(redis, total_cap=10, owner_cap=10, reserved=5, keys=2)
