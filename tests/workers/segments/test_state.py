"""A segment's state on a real Redis: starting it, and each outcome filed as the envelope says it
(no model runs here: the outcomes are the chain's, given)."""

from __future__ import annotations

import uuid

import pytest
from PIL import Image
from redis import Redis

from contract.checked import CheckedSpec
from contract.envelope import FailureType, JobEnvelope, JobStatus, StageTrace
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.segments import plan_segments
from contract.spec import JobSpec
from jobs.claims import Claims
from jobs.lifecycle import Lifecycle
from jobs.queues import pool_queue
from jobs.store import JobStore
from workers.segments.state import SegmentState
from workers.stages.errors import StageError
from workers.stages.outcomes import Failed, Made, Stopped


@pytest.fixture
def state(redis: Redis, registry: ModelRegistry) -> SegmentState:
    # demo-flux on a pool of its own: an SD1.5 -> Flux job has two segments
    flux = registry.models["demo-flux"].model_copy(update={"pool": "flux"})
    two_pools = registry.model_copy(update={"models": {**registry.models, "demo-flux": flux}})
    claims = Claims(redis, "w1", 8.0)
    return SegmentState(Lifecycle(JobStore(redis, 60)), two_pools, claims, "w1")


def queued(state: SegmentState, *stages: dict[str, object]) -> tuple[str, CheckedSpec]:
    spec = JobSpec.model_validate(
        {"prompt": "a lighthouse", "width": 64, "height": 64, "timeout_s": 90,
         "stages": list(stages)}
    )  # fmt: skip
    checked = check_job(spec, state.registry, JobLimits()).spec
    job_id = str(uuid.uuid4())
    with state.store.redis.pipeline() as pipe:
        state.store.create(job_id, checked, pipe, owner="alice")
        pipe.execute()
    return job_id, checked


def started(state: SegmentState, job_id: str) -> JobEnvelope:
    envelope = state.start(job_id, 0)
    assert isinstance(envelope, JobEnvelope)
    return envelope


def trace(model: str) -> StageTrace:
    return StageTrace(stage=0, model=model, worker="w1", sampler="Euler", input="text",
                      width=64, height=64, seconds=0.1)  # fmt: skip


def test_a_started_job_runs_on_this_worker_and_counts_an_attempt(state: SegmentState) -> None:
    job_id, _ = queued(state, {"model": "demo-sd15", "steps": 2})
    started(state, job_id)
    envelope = state.store.load(job_id)
    assert envelope is not None
    assert envelope.status is JobStatus.RUNNING
    assert state.store.field(job_id, "worker") == "w1"
    assert envelope.started_at is not None
    assert state.store.field(job_id, "attempts:0") == "1"


def test_a_job_canceled_while_queued_ends_canceled_and_does_not_start(
    state: SegmentState,
) -> None:
    job_id, _ = queued(state, {"model": "demo-sd15", "steps": 2})
    state.store.request_cancel(job_id)
    assert state.start(job_id, 0) is None
    assert state.store.field(job_id, "status") == "canceled"
    assert state.start(job_id, 0) is None  # final: nothing to do, again


@pytest.mark.parametrize(
    ("outcome", "status", "failure", "words"),
    [
        (Stopped("canceled"), "canceled", None, None),
        (Stopped("timeout"), "failed", FailureType.TIMEOUT, "longer than its 90 s limit"),
        (Failed(FailureType.OUT_OF_MEMORY, "out of GPU memory; ask for less"), "failed",
         FailureType.OUT_OF_MEMORY, "out of GPU memory; ask for less"),
    ],
)  # fmt: skip
def test_each_way_a_segment_stops_is_the_envelope_a_client_reads(
    state: SegmentState,
    outcome: Stopped | Failed,
    status: str,
    failure: FailureType | None,
    words: str | None,
) -> None:
    job_id, spec = queued(state, {"model": "demo-sd15", "steps": 2})
    started(state, job_id)
    assert state.end(job_id, 0, spec, None, outcome) == failure  # what RQ is told, too
    envelope = state.store.load(job_id)
    assert envelope is not None
    assert envelope.status.value == status
    assert envelope.finished_at is not None
    if words is None:
        assert envelope.error is None
    else:
        assert envelope.error is not None
        assert (envelope.error.type, words in envelope.error.message) == (failure, True)


def test_an_outcome_for_a_job_that_already_ended_changes_nothing(state: SegmentState) -> None:
    job_id, spec = queued(state, {"model": "demo-sd15", "steps": 2})
    started(state, job_id)
    state.end(job_id, 0, spec, None, Stopped("canceled"))
    # a late failure (a batch companion's, say) does not overwrite the cancel
    assert state.end(job_id, 0, spec, None, Failed(FailureType.GENERATION_FAILED, "x")) is None
    assert state.store.field(job_id, "status") == "canceled"


def test_pictures_made_mid_job_are_handed_to_the_next_pool(state: SegmentState) -> None:
    job_id, spec = queued(
        state,
        {"model": "demo-sd15", "steps": 2},
        {"model": "demo-flux", "mode": "hires", "handoff": "pixel", "steps": 2},
    )
    segments = plan_segments(spec, state.registry)
    assert [s.pool for s in segments] == ["default", "flux"]
    with pytest.raises(StageError, match="segment 1's input pictures are missing"):
        state.handed_over(job_id, 1, 1)
    started(state, job_id)
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    made = Made([picture], [trace("demo-sd15")])
    assert state.end(job_id, 0, spec, segments, made) is None
    assert state.store.field(job_id, "status") == "running"  # the job goes on
    [handed] = state.handed_over(job_id, 1, 1)
    assert handed.tobytes() == picture.tobytes()  # a PNG: every level as it was
    assert pool_queue(state.store.redis, "flux").count == 1
