"""A job's state in Redis, read and written by the gateway and the workers alike.

Status changes go through `transition`, a compare-and-set in one optimistic transaction, so that
a cancel from the gateway and a worker finishing the job cannot both win; the same transaction
releases the job's cap slots, owes the job's webhook and tells listeners. This module only
stores: what else happens when a job ends (metrics, what the webhook owes) is `lifecycle`'s and
`webhooks`' business. Finished jobs expire after the result TTL. The PNGs (results, init image,
hand-overs between pools) live in Redis, so that gateway and workers need no shared disk, or in
an S3 bucket (`jobs.pictures`) with Redis keeping only the records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from contract.checked import CheckedSpec
from contract.envelope import (
    FailureType,
    ImageInfo,
    JobEnvelope,
    JobError,
    JobStatus,
    Progress,
    StageTrace,
    WebhookDelivery,
)
from jobs.caps import free
from jobs.pictures import (
    INIT_NAME,
    S3Pictures,
    handoff_name,
    image_name,
    note_due,
)
from jobs.redis_client import Replication
from jobs.redis_keys import (
    cancel_key,
    events_channel,
    handoff_key,
    image_key,
    init_image_key,
    job_key,
    stage_images_key,
    text,
)

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Transition:
    """What `transition` found: whether it applied, and the status it saw."""

    applied: bool
    previous: JobStatus | None  # None: the job is gone (or its status no longer parses)


class JobStore:
    def __init__(
        self,
        redis: Redis,
        result_ttl_s: int,
        pictures: S3Pictures | None = None,
        replication: Replication | None = None,
    ) -> None:
        self.redis = redis
        self.result_ttl_s = result_ttl_s
        self.pictures = pictures  # None: the PNGs live in Redis
        self.replication = replication  # None: no replica is waited for

    def unreplicated(self) -> int | None:
        """None where the writes so far are on as many replicas as the deployment asks (or it
        asks none); else how many replicas hold them (after waiting IMAGEGEN_REDIS_REPLICA_WAIT_MS
        for them)."""
        if self.replication is None:
            return None
        return self.replication.confirmed(self.redis)

    def create(
        self,
        job_id: str,
        spec: CheckedSpec,
        pipeline: Pipeline,
        init_image: bytes | None = None,
        stage_images: dict[str, bytes] | None = None,
        **fields: str | int,
    ) -> datetime:
        """Write a queued job's record (and its init image and control images, kept apart from
        the spec the envelope serves) into `pipeline`."""
        created = now()
        mapping: dict[str, str | int] = {
            "status": JobStatus.QUEUED.value,
            "created_at": created.isoformat(),
            "spec": spec.model_dump_json(exclude_none=True),
        }
        mapping.update(fields)
        pipeline.hset(job_key(job_id), mapping=mapping)  # type: ignore[arg-type]
        if init_image is not None and self.pictures is not None:
            # Now, before the record exists: an admission does not wait for the store
            # (PicturesUnavailable, a 503), and an object whose record never came is swept.
            note_due(self.redis, job_id, self.result_ttl_s)
            self.pictures.put(job_id, INIT_NAME, init_image, wait_s=0)
        elif init_image is not None:
            # Deleted when the job ends (drop_inputs); the TTL is a backstop.
            pipeline.set(init_image_key(job_id), init_image, ex=self.result_ttl_s)
        if stage_images:
            pipeline.hset(stage_images_key(job_id), mapping=stage_images)  # type: ignore[arg-type]
            pipeline.expire(stage_images_key(job_id), self.result_ttl_s)
        return created

    def stage_images(self, job_id: str) -> dict[str, bytes]:
        """The job's stage pictures by hash field (contract.stage_images)."""
        raw: dict[bytes, bytes] = self.redis.hgetall(stage_images_key(job_id))  # type: ignore[assignment]
        return {text(k): v for k, v in raw.items()}

    def init_image(self, job_id: str) -> bytes | None:
        if self.pictures is not None:
            return self.pictures.get(job_id, INIT_NAME, wait_s=self.pictures.config.write_wait_s)
        value = self.redis.get(init_image_key(job_id))
        return value if isinstance(value, bytes) else None

    def note_finishing(self, job_id: str, segment: int, pool: str) -> None:
        """Segment `segment`'s RQ call returns (RQ deletes its job) while this worker's finisher
        still stores its pictures: the janitor queues it again in `pool` if that worker dies."""
        self.redis.hset(job_key(job_id), finishing_field(segment), pool)

    def forget_finishing(self, pipeline: Pipeline, job_id: str, segment: int) -> None:
        """Into `pipeline`: the segment is queued again; no finisher stores it now."""
        pipeline.hdel(job_key(job_id), finishing_field(segment))

    def count_attempt(self, job_id: str, segment: int) -> None:
        """Counts runs of each segment: a retried one shows 2 (the reliability tests read it)."""
        self.redis.hincrby(job_key(job_id), f"attempts:{segment}", 1)

    def hand_over(
        self,
        pipeline: Pipeline,
        job_id: str,
        segment: int,
        pngs: Sequence[bytes],
        trace: list[dict[str, object]],
    ) -> None:
        """Into `pipeline`: the pictures segment `segment` starts from, and the trace so far. In
        object storage they are written now, before the transaction that queues the segment
        (PicturesUnavailable once the write has waited its time)."""
        if self.pictures is not None:
            note_due(self.redis, job_id, self.result_ttl_s)
        for index, png in enumerate(pngs):
            if self.pictures is not None:
                self.pictures.put(job_id, handoff_name(segment, index), png)
            else:
                pipeline.set(handoff_key(job_id, segment, index), png, ex=self.result_ttl_s)
        pipeline.hset(job_key(job_id), "trace", json.dumps(trace))

    def handed_over(self, job_id: str, segment: int, index: int) -> bytes | None:
        if self.pictures is not None:
            name = handoff_name(segment, index)
            return self.pictures.get(job_id, name, wait_s=self.pictures.config.write_wait_s)
        value = self.redis.get(handoff_key(job_id, segment, index))
        return value if isinstance(value, bytes) else None

    def drop_inputs(self, pipeline: Pipeline, job_id: str, spec: CheckedSpec | None) -> None:
        """Into `pipeline`: delete what an ended job no longer needs, its init and control images
        and the pictures handed between pools (their TTLs are only the backstop)."""
        pipeline.delete(init_image_key(job_id), stage_images_key(job_id))
        handoffs = (
            []
            if spec is None
            else [(s, i) for s in range(1, len(spec.stages)) for i in range(spec.num_images)]
        )
        if self.pictures is not None:  # not in the pipeline: now, best effort
            names = [INIT_NAME] + [handoff_name(s, i) for s, i in handoffs]
            self.pictures.delete(job_id, names)
            return
        for segment, index in handoffs:
            pipeline.delete(handoff_key(job_id, segment, index))

    def load(self, job_id: str) -> JobEnvelope | None:
        found = self.load_with_owner(job_id)
        return found[0] if found else None

    def load_with_owner(self, job_id: str) -> tuple[JobEnvelope, str] | None:
        raw: dict[bytes, bytes] = self.redis.hgetall(job_key(job_id))  # type: ignore[assignment]
        if not raw:
            return None
        return envelope_from_hash(job_id, raw), raw.get(b"owner", b"").decode()

    def field(self, job_id: str, name: str) -> str | None:
        value = self.redis.hget(job_key(job_id), name)
        return None if value is None else text(value)

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        allowed_from: Iterable[str],
        then: Callable[[Pipeline, JobStatus], None] | None = None,
        **fields: Any,
    ) -> Transition:
        """Set status `to` (and `fields`) only if the current status is in `allowed_from` (job
        statuses, or a status value that no longer parses, which only `unreadable` jobs have).

        A success never overrides a cancel request: a job whose client asked to cancel before
        it finished ends `canceled` (only `finished_at` is written), so a 202 to cancel holds. A
        final status also expires the record and frees the job's cap slots. `then(pipe, status)`
        adds what must happen if and only if a final status is written, in the same MULTI/EXEC
        (the webhook a job owes): the check and the writes are one optimistic transaction,
        retried when the record or the cancel flag changes under it."""
        allowed = {str(s) for s in allowed_from}
        key, cancel = job_key(job_id), cancel_key(job_id)
        written = {name: _encode(value) for name, value in fields.items()}
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key, cancel)  # type: ignore[no-untyped-call]
                    current, owner = pipe.hmget(key, "status", "owner")
                    if current is None:
                        return Transition(False, None)
                    previous = text(current)
                    if previous not in allowed:
                        return Transition(False, _known(previous))
                    status, mapping = to, written
                    if to is JobStatus.SUCCEEDED and pipe.exists(cancel):
                        status = JobStatus.CANCELED
                        mapping = {k: v for k, v in written.items() if k == "finished_at"}
                    pipe.multi()
                    pairs = [item for pair in mapping.items() for item in pair]
                    pipe.hset(key, "status", status.value, items=pairs)
                    if status.is_final:
                        pipe.expire(key, self.result_ttl_s)
                        free(pipe, job_id, text(owner or b""))
                        if then is not None:
                            then(pipe, status)
                    pipe.publish(events_channel(job_id), status.value)
                    pipe.execute()
                    return Transition(True, _known(previous))
                except WatchError:
                    continue

    def set_progress(self, job_id: str, progress: Progress) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(job_key(job_id), "progress", progress.model_dump_json())
            pipe.publish(events_channel(job_id), "progress")
            pipe.execute()

    def store_images(self, job_id: str, pngs: Sequence[bytes]) -> None:
        if self.pictures is not None:
            # Noted first: objects written by a worker that then dies are swept all the same.
            note_due(self.redis, job_id, self.result_ttl_s)
            for index, png in enumerate(pngs):
                self.pictures.put(job_id, image_name(index), png)
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for index, png in enumerate(pngs):
                pipe.set(image_key(job_id, index), png, ex=self.result_ttl_s)
            pipe.execute()

    def image(self, job_id: str, index: int) -> bytes | None:
        """A stored result; PicturesUnavailable (at once, no wait) if its store is S3 and
        unreachable."""
        if self.pictures is not None:
            return self.pictures.get(job_id, image_name(index), wait_s=0)
        value = self.redis.get(image_key(job_id, index))
        return value if isinstance(value, bytes) else None

    def image_redirect(self, job_id: str, index: int) -> str | None:
        """Where a client may fetch a stored result itself (a presigned URL), if the deployment
        hands those out (IMAGEGEN_S3_PRESIGN_S); None: the gateway streams it."""
        if self.pictures is None or not self.pictures.presign_s:
            return None
        return self.pictures.url(job_id, image_name(index))

    def request_cancel(self, job_id: str) -> None:
        self.redis.set(cancel_key(job_id), "1", ex=self.result_ttl_s)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(cancel_key(job_id)))


def finishing_field(segment: int) -> str:
    return f"finishing:{segment}"


def note_rq_job(pipeline: Pipeline, job_id: str, rq_job: str) -> None:
    """The RQ job that runs the job's current segment (the janitor checks it still exists)."""
    pipeline.hset(job_key(job_id), "rq_job", rq_job)


def note_webhook(redis: Redis | Pipeline, job_id: str, record: WebhookDelivery) -> None:
    """The notification the job owes, as far as it got."""
    redis.hset(job_key(job_id), "webhook", record.model_dump_json())


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    return json.dumps(value, default=lambda v: v.model_dump(mode="json"))


def envelope_from_hash(job_id: str, raw: dict[bytes, bytes]) -> JobEnvelope:
    """The envelope of a stored job. Never raises: a record that no longer parses (written by
    another version, or edited by hand) is served as a `failed` job that says which fields broke,
    and the janitor's sweep then ends it for good (`unreadable`)."""
    fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    broken: list[str] = []

    def read(name: str, parse: Callable[[str], T], default: T) -> T:
        if name not in fields:
            return default
        try:
            return parse(fields[name])
        except (ValueError, TypeError, KeyError):  # pydantic's ValidationError is a ValueError
            broken.append(name)
            return default

    def required(name: str, parse: Callable[[str], T], default: T) -> T:
        if name not in fields:
            broken.append(name)
        return read(name, parse, default)

    status = required("status", JobStatus, JobStatus.FAILED)
    created_at = required("created_at", datetime.fromisoformat, _UNKNOWN_TIME)
    spec: CheckedSpec | None = required("spec", CheckedSpec.model_validate_json, None)
    envelope = JobEnvelope(
        id=job_id,
        status=status,
        created_at=created_at,
        started_at=read("started_at", datetime.fromisoformat, None),
        finished_at=read("finished_at", datetime.fromisoformat, None),
        spec=spec,
        progress=read("progress", Progress.model_validate_json, None),
        images=read("images", _IMAGES.validate_json, list[ImageInfo]()),
        error=read("error", JobError.model_validate_json, None),
        trace=read("trace", _TRACE.validate_json, list[StageTrace]()),
        webhook=read("webhook", WebhookDelivery.model_validate_json, None),
    )
    if not broken:
        return envelope
    return envelope.model_copy(
        update={
            "status": JobStatus.FAILED,
            "progress": None,
            "images": [],
            "trace": [],
            "error": JobError(
                type=FailureType.RECORD_UNREADABLE,
                message=f"the stored job could no longer be read (broken: {', '.join(broken)}); "
                "submit it again",
            ),
        }
    )


def unreadable(envelope: JobEnvelope) -> bool:
    """Whether `envelope` stands for a stored job that no longer parses."""
    return envelope.error is not None and envelope.error.type is FailureType.RECORD_UNREADABLE


_STATUS_VALUES = frozenset(s.value for s in JobStatus)


def _known(status: str) -> JobStatus | None:
    return JobStatus(status) if status in _STATUS_VALUES else None


# What a record missing its creation time says instead (there is no true value to serve).
_UNKNOWN_TIME = datetime.fromtimestamp(0, UTC)
_IMAGES = TypeAdapter(list[ImageInfo])
_TRACE = TypeAdapter(list[StageTrace])
