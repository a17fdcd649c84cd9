"""What the gateway does with jobs: admit (check, store and enqueue in one transaction), read
what a caller may see, cancel."""

from __future__ import annotations

import io
import logging
import os
import threading
import uuid
from dataclasses import dataclass

from PIL import Image
from redis import Redis

from app.keys import Caller
from contract.envelope import JobEnvelope, JobStatus
from contract.job_rules import CheckedJob, JobLimits, check_job
from contract.registry import ModelRegistry
from contract.segments import plan_segments
from contract.spec import JobSpec
from contract.stage_images import without_stage_images
from contract.violations import JobRejected, Violation
from jobs import metrics
from jobs.caps import Caps
from jobs.idempotency import Claim, Idempotency
from jobs.lifecycle import Lifecycle
from jobs.queues import QueuePolicy, cancel_rq_job, enqueue_segment
from jobs.room import StoreRoom
from jobs.store import JobStore
from jobs.webhook_guard import refusal

log = logging.getLogger("imagegen.gateway")

MAX_IMAGES = 16


def decode_slots() -> int:
    """Decodes at once in one gateway process: every core but one (which keeps the event loop,
    health checks and Redis round trips answered), at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


class JobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        # Also for another key's job: a 403 would confirm that it exists.
        super().__init__(f"no job {job_id} (unknown, or expired)")


class ImageNotFound(Exception):
    def __init__(self, job_id: str, index: int) -> None:
        super().__init__(f"job {job_id} has no image {index}")


class NotReplicated(Exception):
    """No replica took the job within IMAGEGEN_REDIS_REPLICA_WAIT_MS: it was withdrawn."""

    def __init__(self, job_id: str, replicas: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"job {job_id}: {replicas} of {wanted} Redis replicas confirmed it in {timeout_ms} ms"
        )


class JobAlreadyFinished(Exception):
    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} has already finished ({status.value})")
        self.status = status


@dataclass(frozen=True)
class CancelOutcome:
    envelope: JobEnvelope
    immediate: bool  # True: it was queued and is canceled now; False: a running job will stop


class JobService:
    def __init__(
        self,
        lifecycle: Lifecycle,
        registry: ModelRegistry,
        limits: JobLimits,
        max_retries: int,
        caps: Caps,
        idempotency: Idempotency,
        room: StoreRoom | None = None,
        decodes: threading.BoundedSemaphore | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.store: JobStore = lifecycle.store
        self.redis: Redis = lifecycle.store.redis
        self.registry = registry
        self.limits = limits
        self.max_retries = max_retries
        self.caps = caps
        self.idempotency = idempotency
        self.room = room
        # Decoding a picture is the one admission step that costs real CPU: at most this many at
        # once, so request threads queue for it and the cores keep time for everything else.
        self.decodes = decodes or threading.BoundedSemaphore(decode_slots())

    def submit(
        self, spec: JobSpec, owner: str, idempotency_key: str | None = None
    ) -> tuple[JobEnvelope, bool]:
        """Validate (JobRejected: nothing is stored), then queue the job. Returns the envelope
        and whether it is new (False: the same Idempotency-Key and body were seen before)."""
        checked = check_job(spec, self.registry, self.limits, self.decodes)
        if spec.webhook_url is not None:
            self._check_webhook(str(spec.webhook_url))
        if self.room is not None:
            self.room.check()  # a valid job, but no room left to run it: 503 store_full
        job_id = str(uuid.uuid4())
        if idempotency_key is None:
            return self._admit(job_id, checked, owner, None), True
        claim = self.idempotency.claim(owner, idempotency_key, spec.model_dump_json().encode())
        earlier = self.idempotency.take(claim, job_id)
        if earlier is not None:
            envelope = self.store.load(earlier)
            if envelope is None:  # expired between the two reads
                raise JobNotFound(earlier)
            return envelope, False
        try:
            return self._admit(job_id, checked, owner, claim), True
        except BaseException:
            self.idempotency.give_back(claim)
            raise

    def _check_webhook(self, url: str) -> None:
        webhooks = self.lifecycle.webhooks  # the ones that will send it
        reason: str | None = (
            "webhooks are off on this deployment (no IMAGEGEN_WEBHOOK_SECRET); poll, or follow "
            "GET /jobs/{id}/events instead"
            if webhooks is None or webhooks.secret is None
            else refusal(url, webhooks.allow_private)
        )
        if reason:
            raise JobRejected([Violation("webhook_url_refused", ("webhook_url",), reason)])

    def _admit(
        self, job_id: str, checked: CheckedJob, owner: str, claim: Claim | None
    ) -> JobEnvelope:
        self.caps.reserve(job_id, owner)
        try:
            return self._store_and_enqueue(job_id, checked, owner, claim)
        except BaseException:
            self.caps.release(job_id, owner)
            raise

    def _store_and_enqueue(
        self, job_id: str, checked: CheckedJob, owner: str, claim: Claim | None
    ) -> JobEnvelope:
        # The envelope keeps the spec without the pictures; the worker reads them from their own
        # keys.
        stored, stage_images = without_stage_images(
            checked.spec.model_copy(update={"init_image": None})
        )
        first = plan_segments(stored, self.registry)[0]
        policy = QueuePolicy(stored.timeout_s, self.max_retries, self.store.result_ttl_s)
        with self.redis.pipeline() as pipe:
            pipe.multi()  # one MULTI/EXEC: the envelope and the RQ job appear together
            created = self.store.create(
                job_id, stored, pipe, _png(checked.init_image), stage_images,
                max_retries=self.max_retries, owner=owner,
            )  # fmt: skip
            enqueue_segment(self.redis, pipe, job_id, 0, first.pool, policy, owner)
            if claim is not None:
                self.idempotency.confirm(claim, job_id, pipe)
            metrics.count_job(pipe, "submitted", stored.stages[0].label)
            pipe.execute()
        self._replicate(job_id)
        log.info("job queued", extra={"job_id": job_id, "owner": owner, "pool": first.pool})
        return JobEnvelope(id=job_id, status=JobStatus.QUEUED, created_at=created, spec=stored)

    def _replicate(self, job_id: str) -> None:
        """A 202 says the job is on a replica too (where the deployment asks for replicas), so
        that a failover right after it loses nothing. If none confirms it in time, withdraw it:
        canceled before any worker runs it, and the client told to submit again. (Should the
        primary die during the withdrawal, a retry with the same Idempotency-Key finds the job
        if it survived on the new primary.)"""
        replication = self.store.replication
        short = self.store.unreplicated()
        if replication is None or short is None:
            return
        log.warning("no replica confirmed job %s: withdrawn", job_id)
        self.store.request_cancel(job_id)
        if self.lifecycle.end(job_id, JobStatus.CANCELED, (JobStatus.QUEUED,)).applied:
            self._cancel_rq_job(job_id)
        raise NotReplicated(job_id, short, replication.replicas, replication.timeout_ms)

    def visible(self, job_id: str, caller: Caller) -> JobEnvelope:
        """The job's envelope, if the caller may see it."""
        found = self.store.load_with_owner(job_id)
        if found is None or not caller.may_see(found[1]):
            raise JobNotFound(job_id)
        return found[0]

    def image(self, job_id: str, index: int, caller: Caller) -> bytes:
        """A succeeded job's picture. A job canceled (or failed) after its pictures were stored
        has none to serve: its envelope lists none, and what it ended as is what is billed."""
        self._listed(job_id, index, caller)
        png = self.store.image(job_id, index)
        if png is None:
            raise ImageNotFound(job_id, index)
        return png

    def image_redirect(self, job_id: str, index: int, caller: Caller) -> tuple[str, int] | None:
        """A presigned URL of a succeeded job's picture and how long it is valid, where the
        deployment hands those out (pictures in S3, IMAGEGEN_S3_PRESIGN_S); None: serve the
        bytes."""
        pictures = self.store.pictures
        if pictures is None or not pictures.presign_s:
            return None
        self._listed(job_id, index, caller)
        url = self.store.image_redirect(job_id, index)
        return None if url is None else (url, pictures.presign_s)

    def _listed(self, job_id: str, index: int, caller: Caller) -> None:
        envelope = self.visible(job_id, caller)
        listed = envelope.status is JobStatus.SUCCEEDED and 0 <= index < len(envelope.images)
        if not listed or index >= MAX_IMAGES:
            raise ImageNotFound(job_id, index)

    def cancel(self, job_id: str, caller: Caller) -> CancelOutcome:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        envelope = self.visible(job_id, caller)
        if envelope.status.is_final:
            raise JobAlreadyFinished(job_id, envelope.status)
        # The flag first: a worker claiming the job right now sees it at its first check.
        self.store.request_cancel(job_id)
        outcome = self.lifecycle.end(job_id, JobStatus.CANCELED, (JobStatus.QUEUED,))
        if outcome.applied:
            self._cancel_rq_job(job_id)
        elif (
            outcome.previous is not None
            and outcome.previous.is_final
            # A worker that took the job meanwhile saw the flag and ended it: this cancel did.
            and outcome.previous is not JobStatus.CANCELED
        ):
            raise JobAlreadyFinished(job_id, outcome.previous)
        log.info("cancel requested", extra={"job_id": job_id, "was": envelope.status.value})
        ended = outcome.applied or outcome.previous is JobStatus.CANCELED
        return CancelOutcome(self.visible(job_id, caller), ended)

    def _cancel_rq_job(self, job_id: str) -> None:
        rq_job = self.store.field(job_id, "rq_job")
        if rq_job is not None:
            cancel_rq_job(self.redis, rq_job)


def _png(picture: Image.Image | None) -> bytes | None:
    if picture is None:
        return None
    png = io.BytesIO()
    picture.save(png, format="PNG")
    return png.getvalue()
