"""A segment's state in the job's record: who holds it, whether it may start, and how it ends.

The runner (workers.segments.runner) decides what to run; this writes what became of it, through
the job store and the lifecycle: claims taken and released, `running` on this worker, and each
outcome of workers.stages.outcomes filed as the envelope says it (pictures handed to the next
pool or stored, `canceled`, a failure with its reason).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, assert_never

from PIL import Image
from redis.exceptions import RedisError

from contract.checked import CheckedSpec
from contract.controlnet_files import controlnet_hash
from contract.embeddings import embeddings_of
from contract.envelope import FailureType, JobEnvelope, JobStatus, StageTrace, image_url
from contract.registry import ModelRegistry
from contract.segments import Segment
from contract.vae_files import weights_file
from jobs import metrics
from jobs.claims import Claims
from jobs.disclosure import public_worker_name
from jobs.lifecycle import Lifecycle
from jobs.logs import job_context
from jobs.outage import REDIS_ERRORS, through_outage
from jobs.pictures import PicturesUnavailable
from jobs.queues import QueuePolicy, enqueue_segment
from jobs.store import Transition, now
from workers.models.cache import first_line
from workers.models.weights import file_hash
from workers.segments.finisher import Finisher
from workers.segments.png import FileHashes, encode_png, parameters_text, postprocessing_text
from workers.stages.errors import StageError
from workers.stages.outcomes import Failed, Made, Outcome, Stopped

log = logging.getLogger("imagegen.worker")

_TIMED_OUT = (
    "the job ran longer than its {} s limit and was stopped; ask for fewer steps or a smaller "
    "size, or a larger timeout_s"
)
T = TypeVar("T")
_NOT_STORED = "the pictures were made but could not be stored: "


class NotStored(Exception):
    """A finished segment's results (its pictures, the hand-over to the next segment, the final
    status) that the store refused for as long as they waited (`jobs.outage.through_outage`,
    about three minutes). Not a Redis error: a Redis error mid-segment runs it again
    (`workers.segments.runner`), and pictures already made are never made twice for a write.
    Pictures kept in S3 (`jobs.pictures`) wait there the same way, for IMAGEGEN_S3_WRITE_WAIT_S."""

    def __init__(self, error: RedisError | PicturesUnavailable) -> None:
        super().__init__(str(error))
        self.failure = Failed.not_stored(error)


# QUEUED: a fresh job (or one re-queued after its worker died); RUNNING: a later segment.
_CLAIMABLE = (JobStatus.QUEUED, JobStatus.RUNNING)


class SegmentState:
    def __init__(
        self,
        lifecycle: Lifecycle,
        registry: ModelRegistry,
        claims: Claims,
        worker_name: str,
        finisher: Finisher | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.registry = registry
        self.claims = claims
        self.worker_name = worker_name
        self.finisher = finisher  # None: a job's call stores its pictures itself
        self._refused_at: float | None = None  # when the store last refused results for good

    @contextlib.contextmanager
    def held(self, job_id: str, segment: int) -> Iterator[None]:
        """The segment's claim, for as long as this worker runs it. A worker that batched this
        segment with its own runs it now, or has, or stores it (this one's finisher, too): wait."""
        through_outage(lambda: self.claims.wait_and_take(job_id, segment))
        try:
            yield
        finally:
            through_outage(lambda: self.claims.release(job_id, segment))

    def start(self, job_id: str, segment: int) -> JobEnvelope | FailureType | None:
        """Make the job `running` on this worker: its envelope if it now runs here; the failure
        it was filed with if its record cannot be read; None if there is nothing to do (gone,
        final, canceled before it started, or taken by another worker)."""
        envelope = self.store.load(job_id)
        if envelope is not None and self.lifecycle.fail_unreadable(job_id, envelope):
            return FailureType.RECORD_UNREADABLE
        if envelope is None or envelope.status.is_final:
            state = "expired" if envelope is None else envelope.status.value
            log.info("nothing to do (%s)", state)
            return None
        if self.store.cancel_requested(job_id):
            self.lifecycle.end(job_id, JobStatus.CANCELED, _CLAIMABLE)
            return None
        fields: dict[str, Any] = {"worker": self.worker_name}
        if segment == 0:
            fields["started_at"] = now()
        if not self.store.transition(job_id, JobStatus.RUNNING, _CLAIMABLE, **fields).applied:
            return None
        self.store.count_attempt(job_id, segment)
        log.info("running segment %d", segment)
        return envelope

    def rerun(self, job_id: str) -> None:
        """Back to `queued` after losing Redis mid-segment, for the segment to run again."""
        through_outage(
            lambda: self.store.transition(job_id, JobStatus.QUEUED, (JobStatus.RUNNING,))
        )

    def init_image(self, job_id: str) -> bytes:
        raw = self._read_picture(self.store.init_image, job_id)
        if raw is None:
            raise StageError(
                FailureType.INVALID_JOB, "the job's init_image is missing from the store"
            )
        return raw

    def handed_over(self, job_id: str, index: int, count: int) -> list[Image.Image]:
        """The pictures the previous segment handed to segment `index`."""
        pictures = []
        for k in range(count):
            raw = self._read_picture(self.store.handed_over, job_id, index, k)
            if raw is None:
                raise StageError(
                    FailureType.INVALID_JOB, f"segment {index}'s input pictures are missing"
                )
            pictures.append(Image.open(io.BytesIO(raw)).convert("RGB"))
        return pictures

    @staticmethod
    def _read_picture(read: Callable[..., bytes | None], *args: str | int) -> bytes | None:
        """`read(*args)`, a store that stays away failing the job `storage_unavailable`."""
        try:
            return read(*args)
        except PicturesUnavailable as exc:
            message = Failed.not_stored(exc).message
            raise StageError(FailureType.STORAGE_UNAVAILABLE, message) from exc

    def end(
        self,
        job_id: str,
        index: int,
        spec: CheckedSpec,
        segments: list[Segment] | None,
        outcome: Outcome,
    ) -> FailureType | None:
        """File how segment `index` ended; return the failure the job was filed with, if it was.
        `segments` is the job's plan (None if the job failed before it was planned).

        Nothing is filed once the record names another worker: this one was cut off (its host
        paused or off the network) for longer than its heartbeat, and the job was run again
        elsewhere. What it made now would overwrite that run's pictures."""
        # Waits out Redis like the writes after it (a failover found the bare read failing a
        # finished job `generation_failed`).
        runner = through_outage(lambda: self.store.field(job_id, "worker"))
        if runner is not None and runner != self.worker_name:
            log.warning(
                "segment %d was run again by %s while this worker was cut off; this run's "
                "outcome is dropped",
                index,
                public_worker_name(runner),
            )
            return None
        match outcome:
            case Made(pictures, traces):
                assert segments is not None, "pictures are made only by a planned segment"
                self._complete(job_id, index, spec, segments, pictures, traces)
                return None
            case Stopped("canceled"):
                self._finish(job_id, JobStatus.CANCELED)
                return None
            case Stopped():  # out of time
                return self._fail(job_id, FailureType.TIMEOUT, _TIMED_OUT.format(spec.timeout_s))
            case Failed(type_, message):
                return self._fail(job_id, type_, message)
            case _:
                assert_never(outcome)

    def end_companion(self, job_id: str, spec: CheckedSpec, segments: list[Segment],
                      outcome: Outcome) -> None:  # fmt: skip
        """End a batch companion's first segment as its own run would have, and let its claim
        go."""
        with job_context(job_id):
            try:
                self.end(job_id, 0, spec, segments, outcome)
            except Exception as exc:  # one companion's ending must not strand the others
                log.exception("ending a batched job failed")
                self._fail(job_id, FailureType.GENERATION_FAILED, _NOT_STORED + first_line(exc))
            finally:
                through_outage(lambda: self.claims.release(job_id, 0))

    def _complete(
        self,
        job_id: str,
        index: int,
        spec: CheckedSpec,
        segments: list[Segment],
        images: list[Image.Image],
        traces: list[StageTrace],
    ) -> None:
        """Hand the segment's pictures to the next segment, or store them and finish."""

        def observe() -> None:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for t in traces:
                    if t.step_seconds is not None:
                        metrics.observe_step_seconds(pipe, t.model, t.step_seconds)
                pipe.execute()

        try:
            observe()
        except REDIS_ERRORS:  # step-time metrics are not worth a finished job's wait
            log.warning("step metrics not recorded: the store refused them")
        trace = self._trace_so_far(job_id) + [t.model_dump() for t in traces]
        if index + 1 < len(segments):
            pngs = [encode_png(image) for image in images]
            following = segments[index + 1]
            try:
                self._store_results(
                    lambda: self._hand_over(job_id, index + 1, following, pngs, trace, spec)
                )
            except NotStored as refused:
                self._fail_not_stored(job_id, refused)
            return
        if self.finisher is None:
            try:
                self._store_and_finish(job_id, spec, images, trace)
            except NotStored as refused:
                self._fail_not_stored(job_id, refused)
            return
        # The claim is released once the pictures are stored, not when this call returns.
        pool = segments[index].pool
        through_outage(lambda: self.store.note_finishing(job_id, index, pool))
        self.claims.lend(job_id, index)

        def finish() -> None:
            with job_context(job_id):
                try:
                    self._store_and_finish(job_id, spec, images, trace)
                except NotStored as refused:
                    self._fail_not_stored(job_id, refused)
                except Exception as exc:
                    log.exception("storing the pictures failed")
                    self._fail(job_id, FailureType.GENERATION_FAILED, _NOT_STORED + first_line(exc))
                finally:
                    through_outage(lambda: self.claims.settle(job_id, index))

        self.finisher.submit(finish)

    def _store_and_finish(
        self, job_id: str, spec: CheckedSpec, images: list[Image.Image], trace: list[dict[str, Any]]
    ) -> None:
        sampler = str(trace[0]["sampler"])
        public_spec = spec.model_copy(update={"init_image": None}).model_dump_json(
            exclude_none=True
        )
        if spec.upscales:
            pngs = [encode_png(im, None, public_spec, postprocessing_text(spec)) for im in images]
        else:
            hashes = self._file_hashes(spec)
            pngs = [
                encode_png(image, parameters_text(spec, k, sampler, hashes), public_spec)
                for k, image in enumerate(images)
            ]
        self._store_results(lambda: self.store.store_images(job_id, pngs))
        infos = [
            {
                "index": k,
                "url": image_url(job_id, k),
                "width": im.width,
                "height": im.height,
                "seed": spec.seed_of(k),
            }
            for k, im in enumerate(images)
        ]
        self._finish(job_id, JobStatus.SUCCEEDED, self._store_results, images=infos, trace=trace)

    def _store_results(self, write: Callable[[], T]) -> T:
        """A write of finished results: waits out a full or restarting Redis (the pictures wait
        in memory meanwhile), then gives up as NotStored. Once one has given up, the next tries
        once while the store still refuses (a batch's members do not wait three minutes each)."""
        recently = self._refused_at is not None and time.monotonic() - self._refused_at < 60
        try:
            done = write() if recently else through_outage(write)
        except (*REDIS_ERRORS, PicturesUnavailable) as error:
            self._refused_at = time.monotonic()
            raise NotStored(error) from error
        self._refused_at = None
        return done

    def _fail_not_stored(self, job_id: str, refused: NotStored) -> None:
        """File the job failed with the store's type; never run it again for it. If the store
        refuses even that (a few bytes) to the end, the job stays `running` and its claim
        lapses; the janitor then queues it again once there is room (`jobs.janitor`)."""
        log.error("the store refused the job's results: %s", refused.failure.type.value)
        # A refused write's bytes stay in its connection's buffer on the server, counted as used
        # memory, until Redis trims it: closed, the few bytes of the ending fit where the
        # picture did not.
        self.store.redis.connection_pool.disconnect(inuse_connections=False)  # idle ones only
        try:
            self._fail(job_id, refused.failure.type, refused.failure.message)
        except REDIS_ERRORS:
            log.exception("the store refused the job's failure too")

    def _hand_over(
        self,
        job_id: str,
        index: int,
        segment: Segment,
        pngs: list[bytes],
        trace: list[dict[str, object]],
        spec: CheckedSpec,
    ) -> None:
        """Store the pictures for the next pool's worker and queue it, in one transaction."""
        retries = int(self.store.field(job_id, "max_retries") or 0)
        owner = self.store.field(job_id, "owner") or ""  # its next segment waits its key's turn
        policy = QueuePolicy(spec.timeout_s, retries, self.store.result_ttl_s)
        redis = self.store.redis
        with redis.pipeline() as pipe:
            pipe.multi()
            self.store.hand_over(pipe, job_id, index, pngs, trace)
            enqueue_segment(redis, pipe, job_id, index, segment.pool, policy, owner)
            pipe.execute()
        log.info("handed segment %d to pool %s", index, segment.pool)

    def _file_hashes(self, spec: CheckedSpec) -> FileHashes:
        """A1111's short hashes of the LoRA, VAE and embedding files the job used (the first 12
        hex digits of each file's SHA-256), and sd-webui-controlnet's of its ControlNets and
        IP-Adapters."""
        registry = self.registry
        loras = {u.name for stage in spec.stages for u in stage.loras or ()}
        vaes = {stage.vae for stage in spec.stages if stage.vae is not None}
        vae_files = {n: weights_file(registry.vaes[n].file) for n in vaes if n in registry.vaes}
        known = registry.embeddings
        named = [n for stage in spec.stages for n in embeddings_of(spec, stage, known)]
        return FileHashes(
            loras={n: file_hash(registry.loras[n].file) for n in loras if n in registry.loras},
            vaes={name: file_hash(path) for name, path in vae_files.items()},
            embeddings={n: file_hash(known[n].file) for n in dict.fromkeys(named)},
            controlnets={
                u.name: controlnet_hash(registry.controlnets[u.name].file) or ""
                for u in spec.stages[0].controlnets or ()
                if u.name in registry.controlnets
            }
            | {
                u.name: controlnet_hash(registry.ip_adapters[u.name].file) or ""
                for u in spec.stages[0].ip_adapters or ()
                if u.name in registry.ip_adapters
            },
        )

    def _trace_so_far(self, job_id: str) -> list[dict[str, object]]:
        raw = self.store.field(job_id, "trace")
        return list(json.loads(raw)) if raw else []

    def _finish(
        self,
        job_id: str,
        status: JobStatus,
        wait: Callable[[Callable[[], object]], object] = through_outage,
        **fields: object,
    ) -> None:
        """End the job, the write waiting out Redis as `wait` does (a success's, as the rest of
        its results: `_store_results`)."""
        when = now()

        def end() -> None:
            self.lifecycle.end(job_id, status, (JobStatus.RUNNING,), finished_at=when, **fields)
            self._replicated()

        wait(end)
        log.info("job %s", status.value)

    def _replicated(self) -> None:
        """Wait for the replicas to hold a job's ending (IMAGEGEN_REDIS_MIN_REPLICAS) before
        this worker moves on: a failover right after would otherwise lose it, and the job would
        run again. Losing the primary meanwhile raises, and the caller's wait writes the ending
        again on the new one (an ending already there is not written twice)."""
        short = self.store.unreplicated()
        if short is not None:
            log.warning("only %d Redis replicas confirmed the job's ending; going on", short)

    def _fail(self, job_id: str, type_: FailureType, message: str) -> FailureType | None:
        when = now()

        def fail() -> Transition:
            ended = self.lifecycle.fail(
                job_id, type_, message, allowed_from=(JobStatus.RUNNING,), finished_at=when
            )
            self._replicated()
            return ended

        outcome = through_outage(fail)
        log.info("job failed (%s)", type_.value)
        return type_ if outcome.applied else None
