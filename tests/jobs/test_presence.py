"""Worker presence: published with a TTL, so a dead worker vanishes by itself."""

from __future__ import annotations

import time

from redis import Redis

from jobs.presence import WorkerPresence, live_workers, publish, withdraw


def presence(name: str) -> WorkerPresence:
    return WorkerPresence(
        name=name, pool="default", models=["m"], loaded=[], resident_mib=0.0, loads=0
    )


def test_published_workers_are_live_until_withdrawn_or_expired(redis: Redis) -> None:
    publish(redis, presence("w-b"), ttl_s=60)
    publish(redis, presence("w-a"), ttl_s=1)
    assert [w.name for w in live_workers(redis)] == ["w-a", "w-b"]
    withdraw(redis, "w-b")
    time.sleep(1.1)
    assert live_workers(redis) == []
