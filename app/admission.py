"""Admitting a job: check it against the registry, then store and enqueue it in one round trip."""

from __future__ import annotations

import io
import uuid

from redis import Redis
from rq import Callback, Queue, Retry

from contract.chain_rules import JobLimits, check_job
from contract.envelope import JobEnvelope, JobStatus
from contract.job_store import JobStore, init_image_key
from contract.queues import ON_FAILURE, RUN_JOB, SERIALIZER, queue_for_model
from contract.registry import ModelRegistry
from contract.spec import JobSpec


class Admission:
    def __init__(
        self,
        redis: Redis,
        store: JobStore,
        registry: ModelRegistry,
        limits: JobLimits,
        job_timeout_s: int,
        max_retries: int,
    ) -> None:
        self.redis = redis
        self.store = store
        self.registry = registry
        self.limits = limits
        self.job_timeout_s = job_timeout_s
        self.max_retries = max_retries
        self._queues: dict[str, Queue] = {}

    def queue(self, model: str) -> Queue:
        name = queue_for_model(model)
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.redis, serializer=SERIALIZER)
        return self._queues[name]

    def submit(self, spec: JobSpec) -> JobEnvelope:
        """Validate (raises JobRejected: nothing is stored) and queue the job."""
        checked = check_job(spec, self.registry, self.limits)
        job_id = str(uuid.uuid4())
        # The envelope keeps the spec without the picture; the worker reads it from its own key.
        stored_spec = checked.spec.model_copy(update={"init_image": None})
        with self.redis.pipeline() as pipe:
            pipe.multi()  # one MULTI/EXEC: the envelope and the RQ job appear together
            created = self.store.create(job_id, stored_spec, pipe, timeout_s=self.job_timeout_s)
            if checked.init_image is not None:
                png = io.BytesIO()
                checked.init_image.save(png, format="PNG")
                pipe.set(init_image_key(job_id), png.getvalue())
            self.queue(spec.stages[0].model).enqueue(
                RUN_JOB,
                job_id,
                job_id=job_id,
                pipeline=pipe,
                # RQ's own timeout is a backstop; the worker stops the job at its deadline first.
                job_timeout=self.job_timeout_s + 30,
                result_ttl=self.store.result_ttl_s,
                failure_ttl=self.store.result_ttl_s,
                retry=Retry(max=self.max_retries) if self.max_retries else None,
                on_failure=Callback(ON_FAILURE),
            )
            pipe.execute()
        return JobEnvelope(id=job_id, status=JobStatus.QUEUED, created_at=created, spec=stored_spec)
