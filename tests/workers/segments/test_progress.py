"""The step monitor: progress writes throttled, the last step always written, and the word to
stop at a cancel or past the deadline; on a real Redis."""

from __future__ import annotations

import time

from redis import Redis

from contract.envelope import Progress
from jobs.store import JobStore
from workers.segments.progress import StepMonitor


class CountingStore(JobStore):
    writes = 0

    def set_progress(self, job_id: str, progress: Progress) -> None:
        self.writes += 1
        super().set_progress(job_id, progress)


def test_progress_writes_are_throttled(redis: Redis) -> None:
    store = CountingStore(redis, 60)
    monitor = StepMonitor(store, "job", [1000.0], deadline=time.time() + 60, interval_s=0.1)
    started = time.monotonic()
    for step in range(1, 1001):  # 1000 steps as fast as Python goes
        assert monitor(0, step, 1000) is None
    elapsed = time.monotonic() - started
    writes = store.writes
    assert 1 <= writes <= elapsed / 0.1 + 2
    assert store.redis.hget("imagegen:job:job", "progress") is not None
    assert b'"step":1000' in store.redis.hget(
        "imagegen:job:job", "progress"
    )  # the last step is always written


def test_monitor_asks_to_stop_past_the_deadline_and_on_cancel(redis: Redis) -> None:
    store = JobStore(redis, 60)
    late = StepMonitor(store, "a", [10.0], deadline=time.time() - 1, interval_s=0.0)
    assert late(0, 1, 10) == "timeout"
    monitor = StepMonitor(store, "b", [10.0], deadline=time.time() + 60, interval_s=0.0)
    assert monitor(0, 1, 10) is None
    store.request_cancel("b")
    assert monitor(0, 2, 10) == "canceled"
