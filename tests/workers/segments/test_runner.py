"""The job runner: throttled progress, stop requests, and whole segments run in this process on
a real Redis with the tiny models."""

from __future__ import annotations

import io
import threading
import uuid
from pathlib import Path

import pytest
from PIL import Image
from redis import Redis

from contract.envelope import JobStatus
from contract.job_rules import JobLimits, check_job
from contract.registry import FolderSource, ModelRegistry
from contract.spec import JobSpec
from jobs.lifecycle import Lifecycle
from jobs.redis_keys import job_key
from jobs.store import JobStore
from workers.models.cache import ModelCache
from workers.segments.finisher import Finisher
from workers.segments.runner import JobRunner

# ---- a whole segment, in this process, on a real Redis and the tiny models ----


@pytest.fixture
def runner(redis: Redis, registry: ModelRegistry) -> JobRunner:
    lifecycle = Lifecycle(JobStore(redis, 60))
    return JobRunner(lifecycle, ModelCache(registry), registry, JobLimits(), "test-worker")


def queued(runner: JobRunner, stages: list[dict[str, object]]) -> str:
    spec = JobSpec.model_validate(
        {"prompt": "a lighthouse", "seed": 1, "width": 64, "height": 64, "stages": stages}
    )
    checked = check_job(spec, runner.registry, runner.limits)
    job_id = str(uuid.uuid4())
    with runner.store.redis.pipeline() as pipe:
        runner.store.create(job_id, checked.spec, pipe, owner="alice")
        pipe.execute()
    return job_id


def test_a_segment_ends_succeeded_with_pngs_and_a_trace(runner: JobRunner) -> None:
    job_id = queued(runner, [{"model": "demo-sd15", "steps": 2}])
    runner.run(job_id)
    envelope = runner.store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.SUCCEEDED, envelope.error
    assert [(t.model, t.worker, t.input) for t in envelope.trace] == [
        ("demo-sd15", "worker-test-worker", "text")  # shown without host and pid
    ]
    png = runner.store.image(job_id, 0)
    assert png is not None
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    assert runner.store.redis.hget(job_key(job_id), "attempts:0") == b"1"


def test_a_model_that_fails_to_load_fails_the_job_with_a_reason(
    redis: Redis, registry: ModelRegistry, tmp_path: Path
) -> None:
    (tmp_path / "model_index.json").write_text("{ not json")
    broken = registry.models["demo-sd15"].model_copy(
        update={"name": "broken", "source": FolderSource(folder=tmp_path)}
    )
    with_broken = ModelRegistry(models={**registry.models, "broken": broken})
    runner = JobRunner(
        Lifecycle(JobStore(redis, 60)), ModelCache(with_broken), with_broken, JobLimits()
    )
    job_id = queued(runner, [{"model": "broken", "steps": 2}])
    runner.run(job_id)
    envelope = runner.store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.FAILED
    assert envelope.error is not None
    assert envelope.error.type == "model_unavailable"
    assert "Traceback" not in envelope.error.message


def test_a_job_canceled_before_it_starts_never_runs(runner: JobRunner) -> None:
    job_id = queued(runner, [{"model": "demo-sd15", "steps": 2}])
    runner.store.request_cancel(job_id)
    runner.run(job_id)
    envelope = runner.store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.CANCELED
    assert runner.store.redis.hget(job_key(job_id), "attempts:0") is None


def test_a_finished_job_is_not_run_again(runner: JobRunner) -> None:
    job_id = queued(runner, [{"model": "demo-sd15", "steps": 2}])
    runner.run(job_id)
    runner.run(job_id)  # RQ delivered it twice
    assert runner.store.redis.hget(job_key(job_id), "attempts:0") == b"1"


def test_with_a_finisher_the_call_returns_before_the_pictures_are_stored(
    redis: Redis, registry: ModelRegistry
) -> None:
    finisher = Finisher()
    gate = threading.Event()
    finisher.submit(lambda: gate.wait(10))  # hold the thread: the job's finish waits behind
    runner = JobRunner(
        Lifecycle(JobStore(redis, 60)), ModelCache(registry), registry, JobLimits(), "w",
        finisher=finisher,
    )  # fmt: skip
    job_id = queued(runner, [{"model": "demo-sd15", "steps": 2}])
    runner.run(job_id)
    # The call is over; the job is still running, its claim held for the finisher.
    assert runner.store.field(job_id, "status") == "running"
    assert runner.state.claims.holder(job_id, 0) == "w"
    gate.set()
    finisher.drain()
    envelope = runner.store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.SUCCEEDED, envelope.error
    assert runner.store.image(job_id, 0) is not None
    assert runner.state.claims.holder(job_id, 0) is None
