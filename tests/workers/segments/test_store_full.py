"""Redis at its memory limit when a batch's pictures are done (issue 29's finding: the worker
denoised the whole segment again, again and again, and companions failed generation_failed).
Now the pictures wait in memory and are stored once there is room, none is denoised twice, and
with no room to the end every member fails `store_full`, once.

The real batched runner and tiny models in this process, on a private Redis whose `maxmemory`
the test sets just above what it holds once the pictures are made: a picture's write (its bytes
count while Redis reads them) is refused, a job's few-byte status writes are not, as on the
hostile pass's stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from contract.envelope import FailureType, JobStatus
from contract.registry import ModelRegistry
from devstack.redis_server import RedisServer
from jobs import outage
from jobs.redis_keys import job_key
from tests.workers.segments.test_batching import runner as batched_runner
from tests.workers.segments.test_batching import submit
from workers.models.cache import ModelCache
from workers.segments import runner as runner_module
from workers.segments.runner import JobRunner

# Room left once the pictures exist: under one 512² picture's PNG (about 700 KB), over what the
# members' endings write.
ROOM_BYTES = 256 * 1024
PROMPTS = ["a lighthouse", "a red barn", "a harbour at night"]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Redis]:
    server = RedisServer(tmp_path / "redis").start()
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        client.config_set("maxmemory", 0)
        server.stop()


@pytest.fixture(scope="module")
def cache(registry: ModelRegistry) -> ModelCache:
    return ModelCache(registry)


def submit_all(runner: JobRunner) -> list[str]:
    stages = [{"model": "demo-sd15", "steps": 2}]
    return [submit(runner, prompt=p, width=512, height=512, stages=stages) for p in PROMPTS]


def fill_when_denoised(
    monkeypatch: pytest.MonkeyPatch, redis: Redis, free_after_s: float | None = None
) -> list[str]:
    """Count each member every time its stages run, fill Redis once they have, and free it
    `free_after_s` later (None: never)."""
    denoised: list[str] = []
    real = runner_module.run_group

    def counting(group: list[Any], *args: Any, **kwargs: Any) -> None:
        denoised.extend(member.job_id for member in group)
        real(group, *args, **kwargs)
        used = int(redis.info("memory")["used_memory"])
        redis.config_set("maxmemory", used + ROOM_BYTES)
        if free_after_s is not None:
            freed = threading.Timer(free_after_s, lambda: redis.config_set("maxmemory", 0))
            freed.daemon = True
            freed.start()

    monkeypatch.setattr(runner_module, "run_group", counting)
    return denoised


def test_pictures_wait_for_room_and_are_stored_once_without_denoising_again(
    private_redis: Redis,
    registry: ModelRegistry,
    cache: ModelCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = batched_runner(private_redis, registry, cache, batch=True)
    jobs = submit_all(runner)
    # Room comes back 2 s after the pictures are made (finished jobs expiring, an operator
    # raising maxmemory).
    denoised = fill_when_denoised(monkeypatch, private_redis, free_after_s=2.0)
    runner.run(jobs[0])  # the leader gathers the other two
    assert sorted(denoised) == sorted(jobs)  # each job denoised once, in one batch
    for job_id in jobs:
        envelope = runner.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.SUCCEEDED, envelope.error
        assert runner.store.image(job_id, 0) is not None
        assert private_redis.hget(job_key(job_id), "attempts:0") == b"1"


def test_with_no_room_to_the_end_every_member_fails_store_full_once(
    private_redis: Redis,
    registry: ModelRegistry,
    cache: ModelCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The wait for room, shortened from its three minutes.
    short = Retry(
        ExponentialBackoff(cap=0.2, base=0.05), retries=4, supported_errors=outage.REDIS_ERRORS
    )
    monkeypatch.setattr(outage, "_WRITE_RETRY", short)
    runner = batched_runner(private_redis, registry, cache, batch=True)
    jobs = submit_all(runner)
    denoised = fill_when_denoised(monkeypatch, private_redis)
    runner.run(jobs[0])
    assert sorted(denoised) == sorted(jobs)  # not run again for a refused write
    for job_id in jobs:
        envelope = runner.store.load(job_id)
        assert envelope is not None
        assert envelope.status is JobStatus.FAILED
        assert envelope.error is not None
        assert envelope.error.type is FailureType.STORE_FULL
        assert "memory limit" in envelope.error.message
        assert "SET" not in envelope.error.message  # never the refused command
        assert runner.store.image(job_id, 0) is None
        assert private_redis.hget(job_key(job_id), "attempts:0") == b"1"
