"""What the gateway does with jobs: admit (check, store and enqueue in one transaction), cancel."""

from __future__ import annotations

import hashlib
import io
import logging
import time
import uuid
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from app.keys import Caller
from contract import metrics
from contract.chain_rules import CheckedJob, JobLimits, check_job
from contract.envelope import JobEnvelope, JobStatus
from contract.job_store import JobStore, now
from contract.outstanding import Outstanding
from contract.queues import (
    SERIALIZER,
    QueuePolicy,
    enqueue_segment,
    plan_segments,
    queue_name,
    rq_job_id,
)
from contract.redis_layout import PREFIX, init_image_key, text
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation
from contract.webhooks import Webhooks, refusal

log = logging.getLogger("imagegen.gateway")


class JobNotFound(Exception):
    pass


class QueueFull(Exception):
    def __init__(self, which: str, cap: int) -> None:
        scope = "for this API key" if which == "owner" else "on this deployment"
        super().__init__(f"{cap} unfinished jobs {scope} already; retry when some have finished")


class IdempotencyConflict(Exception):
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
        outstanding: Outstanding,
        idempotency_ttl_s: int,
        webhooks: Webhooks,
    ) -> None:
        self.redis = redis
        self.store = store
        self.registry = registry
        self.limits = limits
        self.max_retries = max_retries
        self.outstanding = outstanding
        self.idempotency_ttl_s = idempotency_ttl_s
        self.webhooks = webhooks

    def submit(
        self, spec: JobSpec, owner: str, idempotency_key: str | None = None
    ) -> tuple[JobEnvelope, bool]:
        """Validate (JobRejected: nothing is stored), then queue the job. Returns the envelope
        and whether it is new (False: the same Idempotency-Key and body were seen before)."""
        checked = check_job(spec, self.registry, self.limits)
        if spec.webhook_url is not None:
            self._check_webhook(spec.webhook_url)
        job_id = str(uuid.uuid4())
        if idempotency_key is not None:
            claim = _Idempotency(self, owner, idempotency_key, spec)
            existing = claim.take(job_id)
            if existing is not None:
                return existing, False
            try:
                return self._admit(job_id, checked, owner), True
            except BaseException:
                claim.give_back()
                raise
        return self._admit(job_id, checked, owner), True

    def _check_webhook(self, url: str) -> None:
        reason: str | None = (
            "webhooks are off on this deployment (no IMAGEGEN_WEBHOOK_SECRET); poll, or follow "
            "GET /jobs/{id}/events instead"
            if self.webhooks.secret is None
            else refusal(url, self.webhooks.allow_private)
        )
        if reason:
            raise JobRejected([Violation("webhook_url_refused", ("webhook_url",), reason)])

    def _admit(self, job_id: str, checked: CheckedJob, owner: str) -> JobEnvelope:
        full = self.outstanding.reserve(job_id, owner)
        if full is not None:
            cap = self.outstanding.owner_cap if full == "owner" else self.outstanding.total_cap
            raise QueueFull(full, cap)
        try:
            return self._store_and_enqueue(job_id, checked, owner)
        except BaseException:
            self.outstanding.release(job_id, owner)
            raise

    def _store_and_enqueue(self, job_id: str, checked: CheckedJob, owner: str) -> JobEnvelope:
        # The envelope keeps the spec without the picture; the worker reads it from its own key.
        stored = checked.spec.model_copy(update={"init_image": None})
        first = plan_segments(stored, self.registry)[0]
        assert stored.timeout_s is not None
        policy = QueuePolicy(stored.timeout_s, self.max_retries, self.store.result_ttl_s)
        with self.redis.pipeline() as pipe:
            pipe.multi()  # one MULTI/EXEC: the envelope and the RQ job appear together
            created = self.store.create(
                job_id, stored, pipe, max_retries=self.max_retries, owner=owner
            )
            if checked.init_image is not None:
                png = io.BytesIO()
                checked.init_image.save(png, format="PNG")
                pipe.set(init_image_key(job_id), png.getvalue())
            enqueue_segment(self.redis, pipe, job_id, 0, first.pool, policy)
            metrics.count_job(pipe, "submitted", stored.stages[0].model)
            pipe.execute()
        log.info("job queued", extra={"job_id": job_id, "owner": owner, "pool": first.pool})
        return JobEnvelope(id=job_id, status=JobStatus.QUEUED, created_at=created, spec=stored)

    def cancel(self, job_id: str, caller: Caller) -> CancelOutcome:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        found = self.store.load_with_owner(job_id)
        if found is None or not caller.may_see(found[1]):
            raise JobNotFound(job_id)
        envelope = found[0]
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
        log.info("cancel requested", extra={"job_id": job_id, "was": envelope.status.value})
        current = self.store.load(job_id)
        assert current is not None
        return CancelOutcome(current, outcome.applied)


class _Idempotency:
    """`Idempotency-Key`: the first request with a key creates the job; a retry with the same
    body gets that job back; the same key with another body is a conflict. The claim is one
    SET NX, so of concurrent duplicates exactly one creates a job."""

    WAIT_S = 5.0  # how long a duplicate waits for the first request to finish storing its job

    def __init__(self, service: JobService, owner: str, key: str, spec: JobSpec) -> None:
        self.service = service
        name = hashlib.sha256(key.encode()).hexdigest()
        self.redis_key = f"{PREFIX}:idempotency:{owner}:{name}"
        self.body = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()

    def take(self, job_id: str) -> JobEnvelope | None:
        """Claim the key for `job_id`, or return the job an earlier identical request made."""
        redis = self.service.redis
        if redis.set(
            self.redis_key, f"{self.body}:{job_id}", nx=True, ex=self.service.idempotency_ttl_s
        ):
            return None
        deadline = time.monotonic() + self.WAIT_S
        while True:
            raw = redis.get(self.redis_key)
            if raw is None:  # the first request failed and gave the key back: try to claim it
                return self.take(job_id)
            body, _, earlier = text(raw).partition(":")
            if body != self.body:
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body; "
                    "use a new key for a new job"
                )
            envelope = self.service.store.load(earlier)
            if envelope is not None or time.monotonic() > deadline:
                if envelope is None:
                    raise JobNotFound(earlier)
                return envelope
            time.sleep(0.01)

    def give_back(self) -> None:
        self.service.redis.delete(self.redis_key)
