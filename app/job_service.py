"""What the gateway does with jobs: admit (check, store and enqueue in one transaction), cancel."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from contract.chain_rules import JobLimits, check_job
from contract.envelope import JobEnvelope, JobStatus
from contract.job_store import JobStore, init_image_key, now
from contract.queues import (
    SERIALIZER,
    QueuePolicy,
    enqueue_segment,
    plan_segments,
    queue_name,
    rq_job_id,
)
from contract.registry import ModelRegistry
from contract.spec import JobSpec


class JobNotFound(Exception):
    pass


class JobAlreadyFinished(Exception):
    def __init__(self, status: JobStatus) -> None:
        super().__init__(status.value)
        self.status = status


@dataclass(frozen=True)
class CancelOutcome:
    envelope: JobEnvelope
    immediate: bool  # True: it was queued and is canceled now; False: a running job will stop


class JobService:
    def __init__(
        self,
        redis: Redis,
        store: JobStore,
        registry: ModelRegistry,
        limits: JobLimits,
        max_retries: int,
    ) -> None:
        self.redis = redis
        self.store = store
        self.registry = registry
        self.limits = limits
        self.max_retries = max_retries

    def submit(self, spec: JobSpec) -> JobEnvelope:
        """Validate (raises JobRejected: nothing is stored) and queue the job."""
        checked = check_job(spec, self.registry, self.limits)
        job_id = str(uuid.uuid4())
        # The envelope keeps the spec without the picture; the worker reads it from its own key.
        stored = checked.spec.model_copy(update={"init_image": None})
        first = plan_segments(stored, self.registry)[0]
        assert stored.timeout_s is not None
        policy = QueuePolicy(stored.timeout_s, self.max_retries, self.store.result_ttl_s)
        with self.redis.pipeline() as pipe:
            pipe.multi()  # one MULTI/EXEC: the envelope and the RQ job appear together
            created = self.store.create(job_id, stored, pipe, max_retries=self.max_retries)
            if checked.init_image is not None:
                png = io.BytesIO()
                checked.init_image.save(png, format="PNG")
                pipe.set(init_image_key(job_id), png.getvalue())
            enqueue_segment(self.redis, pipe, job_id, 0, first.pool, policy)
            pipe.execute()
        return JobEnvelope(id=job_id, status=JobStatus.QUEUED, created_at=created, spec=stored)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        envelope = self.store.load(job_id)
        if envelope is None:
            raise JobNotFound(job_id)
        if envelope.status.is_final:
            raise JobAlreadyFinished(envelope.status)
        # The flag first: a worker claiming the job right now sees it at its first check.
        self.store.request_cancel(job_id)
        outcome = self.store.transition(
            job_id, JobStatus.CANCELED, (JobStatus.QUEUED,), finished_at=now()
        )
        if outcome.applied:
            pool = plan_segments(envelope.spec, self.registry)[0].pool
            Queue(queue_name(pool), connection=self.redis, serializer=SERIALIZER).remove(
                rq_job_id(job_id, 0)
            )
        elif outcome.previous is not None and outcome.previous.is_final:
            raise JobAlreadyFinished(outcome.previous)
        current = self.store.load(job_id)
        assert current is not None
        return CancelOutcome(current, outcome.applied)
