"""The worker's own bookkeeping on a Redis at its memory limit (`maxmemory` 1 byte: every write
that needs memory is refused): it waits for room instead of raising out of RQ's loop, which
quit the worker (tests/stack/test_full_redis.py runs the whole stack through it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Queue

from jobs.heartbeat_worker import HeartbeatWorker, unique_name
from jobs.lifecycle import Lifecycle


@pytest.fixture
def full(redis: Redis) -> Iterator[Redis]:
    try:
        yield redis
    finally:
        redis.config_set("maxmemory", 0)  # the private server's own setting: none


def test_the_suspension_check_before_a_job_waits_out_a_full_redis(
    full: Redis, lifecycle: Lifecycle
) -> None:
    worker = HeartbeatWorker(
        [Queue("q", connection=full)], connection=full, name=unique_name("t"),
        lifecycle=lifecycle, heartbeat_s=1, heartbeat_ttl_s=10, sweep_interval_s=60,
    )  # fmt: skip
    full.config_set("maxmemory", 1)
    raised: list[BaseException] = []

    def check() -> None:
        try:
            worker.check_for_suspension(burst=False)
        except BaseException as exc:  # what quit the worker: RQ's loop let it out
            raised.append(exc)

    turn = threading.Thread(target=check)
    turn.start()
    time.sleep(1.5)
    assert turn.is_alive()  # waiting for room, not raised
    full.config_set("maxmemory", 0)
    turn.join(timeout=10)
    assert not turn.is_alive()
    assert raised == []
