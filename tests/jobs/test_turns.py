"""Turns across keys in a pool's queue: a newcomer runs next but one, backlogs alternate, and
jobs that left the queue (taken, canceled) cost their key no turn."""

from __future__ import annotations

from redis import Redis

from jobs.queues import QueuePolicy, enqueue_segment, pool_queue
from jobs.redis_keys import job_key, lane_key

POOL = "turns"


def queue(redis: Redis, owner: str, name: str) -> None:
    with redis.pipeline() as pipe:
        pipe.multi()
        pipe.hset(job_key(name), "owner", owner)
        enqueue_segment(redis, pipe, name, 0, POOL, QueuePolicy(60, 0, 60), owner)
        pipe.execute()


def waiting(redis: Redis) -> list[str]:
    return pool_queue(redis, POOL).get_job_ids()


def take(redis: Redis) -> str:
    """What a worker does: the head leaves the list (RQ moves it to its intermediate list)."""
    taken = redis.lpop(pool_queue(redis, POOL).key)
    assert taken is not None
    return taken.decode()


def test_one_key_alone_is_first_come_first_served(redis: Redis) -> None:
    for i in range(5):
        queue(redis, "alice", f"a{i}")
    assert waiting(redis) == ["a0", "a1", "a2", "a3", "a4"]


def test_a_newcomer_runs_next_not_behind_a_backlog(redis: Redis) -> None:
    for i in range(20):
        queue(redis, "alice", f"a{i}")
    assert take(redis) == "a0"  # running
    queue(redis, "bob", "b0")
    assert waiting(redis)[:2] == ["b0", "a1"]
    queue(redis, "carol", "c0")  # newcomers keep their order among themselves
    assert waiting(redis)[:3] == ["b0", "c0", "a1"]


def test_a_newcomer_to_an_untaken_backlog_goes_behind_its_head(redis: Redis) -> None:
    for i in range(3):
        queue(redis, "alice", f"a{i}")
    queue(redis, "bob", "b0")  # a0 came first and no worker has taken it yet
    assert waiting(redis) == ["a0", "b0", "a1", "a2"]


def test_two_backlogs_alternate(redis: Redis) -> None:
    for i in range(4):
        queue(redis, "alice", f"a{i}")
    for i in range(4):
        queue(redis, "bob", f"b{i}")
    assert waiting(redis) == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]
    order = [take(redis) for _ in range(3)]
    queue(redis, "carol", "c0")
    assert order == ["a0", "b0", "a1"]
    assert waiting(redis) == ["b1", "c0", "a2", "b2", "a3", "b3"]


def test_a_canceled_backlog_costs_its_key_one_turn_at_most(redis: Redis) -> None:
    for i in range(10):
        queue(redis, "alice", f"a{i}")
    for i in range(10):  # canceled: taken off the list (jobs.queues.cancel_rq_job)
        redis.lrem(pool_queue(redis, POOL).key, 0, f"a{i}")
    for i in range(5):
        queue(redis, "bob", f"b{i}")
    queue(redis, "alice", "a10")  # not behind all of bob's five
    assert waiting(redis) == ["b0", "b1", "a10", "b2", "b3", "b4"]


def test_a_key_whose_job_was_taken_from_an_empty_queue_has_had_its_turn(redis: Redis) -> None:
    queue(redis, "alice", "a0")
    assert take(redis) == "a0"  # a worker took it at once
    queue(redis, "alice", "a1")
    queue(redis, "alice", "a2")
    queue(redis, "bob", "b0")
    assert waiting(redis) == ["b0", "a1", "a2"]


def test_a_job_rq_pushed_itself_keeps_its_place(redis: Redis) -> None:
    queue(redis, "alice", "a0")
    redis.rpush(pool_queue(redis, POOL).key, "retried")  # RQ's own retry: no turn
    queue(redis, "bob", "b0")
    queue(redis, "alice", "a1")
    assert waiting(redis) == ["a0", "retried", "b0", "a1"]


def test_jobs_of_one_turn_keep_the_order_they_came_in_whatever_their_ids(redis: Redis) -> None:
    # Equal scores sort by member: with UUIDs, a random order. Found by review: d0 went behind z1.
    for owner, name in [("zed", "z0"), ("bob", "b0"), ("carol", "c0"), ("zed", "z1"), ("bob", "b1"),
                        ("zed", "z2")]:  # fmt: skip
        queue(redis, owner, name)
    assert waiting(redis) == ["z0", "b0", "c0", "z1", "b1", "z2"]
    queue(redis, "dave", "d0")
    assert waiting(redis) == ["z0", "b0", "c0", "d0", "z1", "b1", "z2"]


def test_a_keys_lane_holds_its_waiting_jobs_not_its_history(redis: Redis) -> None:
    for i in range(50):  # each taken as soon as it is queued
        queue(redis, "alice", f"a{i}")
        assert take(redis) == f"a{i}"
    assert redis.zcard(lane_key(POOL, "alice")) <= 2
