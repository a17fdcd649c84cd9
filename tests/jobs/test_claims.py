"""One worker at a time runs a segment; a dead holder's claim expires."""

from __future__ import annotations

import threading
import time

from redis import Redis

from jobs.claims import Claims
from jobs.redis_keys import claim_key


def test_one_worker_holds_a_segment_and_only_it_releases_it(redis: Redis) -> None:
    a, b = Claims(redis, "worker-a", 5), Claims(redis, "worker-b", 5)
    assert a.take("job", 0)
    assert a.take("job", 0)  # its own: taken again
    assert not b.take("job", 0)
    assert b.take("job", 1)  # another segment
    b.release("job", 0)  # not b's to release
    assert a.holder("job", 0) == "worker-a"
    a.release("job", 0)
    assert b.take("job", 0)


def test_a_live_holder_keeps_its_claim_past_the_expiry(redis: Redis) -> None:
    a = Claims(redis, "worker-a", 0.3)
    assert a.take("job", 0)
    time.sleep(0.8)  # more than twice the expiry: the refresher extended it
    assert a.holder("job", 0) == "worker-a"


def test_a_waiting_worker_runs_once_the_holder_releases_or_dies(redis: Redis) -> None:
    b = Claims(redis, "worker-b", 5)
    # A worker that died holding a claim: nothing refreshes it, so it expires.
    redis.set(claim_key("job", 0), "dead-worker", px=300)
    started = time.monotonic()
    b.wait_and_take("job", 0, poll_s=0.05)
    assert 0.2 < time.monotonic() - started < 2
    assert b.holder("job", 0) == "worker-b"
    # A live holder: the waiter goes on when it releases.
    a = Claims(redis, "worker-a", 5)
    assert a.take("job", 1)
    threading.Timer(0.3, lambda: a.release("job", 1)).start()
    started = time.monotonic()
    b.wait_and_take("job", 1, poll_s=0.05)
    assert 0.2 < time.monotonic() - started < 2
