"""One segment of a job on a worker: claim it, run its stages, hand on or finish.

Every way a job can end is a status in the envelope: generation errors become `failed` with a
reason a user can act on (the traceback goes to the worker's log, never to the client).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from datetime import datetime
from typing import Any

import torch
from PIL import Image

from contract.checked import CheckedSpec
from contract.envelope import FailureType, JobStatus, StageTrace, image_url
from contract.job_cost import planned_steps
from contract.job_rules import JobLimits, check_job
from contract.registry import ModelRegistry
from contract.segments import Segment, plan_segments
from contract.violations import JobRejected
from jobs import metrics
from jobs.claims import Claims
from jobs.lifecycle import Lifecycle
from jobs.logs import job_context
from jobs.outage import REDIS_ERRORS, SEGMENT_RERUNS, through_outage
from jobs.queues import QueuePolicy, enqueue_segment
from jobs.store import now
from workers.models.cache import ModelCache, ModelUnavailable, first_line
from workers.models.weights import file_hash
from workers.segments.batching import Batching, BatchKey, batch_key, run_within_memory
from workers.segments.finisher import Finisher
from workers.segments.gathering import Gatherer
from workers.segments.png import encode_png, parameters_text
from workers.segments.progress import StepMonitor
from workers.stages.chain import Member, Pictures, StageError, Stopped, run_group

log = logging.getLogger("imagegen.worker")

_TIMED_OUT = (
    "the job ran longer than its {} s limit and was stopped; ask for fewer steps or a smaller "
    "size, or a larger timeout_s"
)
_NOT_STORED = "the pictures were made but could not be stored: "
_OUT_OF_MEMORY = "the worker ran out of GPU memory; ask for a smaller size or fewer images"
# QUEUED: a fresh job (or one re-queued after its worker died); RUNNING: a later segment.
_CLAIMABLE = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobRunner:
    def __init__(
        self,
        lifecycle: Lifecycle,
        cache: ModelCache,
        registry: ModelRegistry,
        limits: JobLimits,
        worker_name: str = "worker",
        progress_interval_s: float = 0.25,
        batching: Batching | None = None,
        claim_ttl_s: float = 8.0,
        finisher: Finisher | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.cache = cache
        self.registry = registry
        self.limits = limits
        self.worker_name = worker_name
        self.progress_interval_s = progress_interval_s
        self.batching = batching
        self.claims = Claims(self.store.redis, worker_name, claim_ttl_s)
        self.finisher = finisher  # None: a job's call stores its pictures itself
        self.gatherer = (
            Gatherer(
                self.store, registry, limits, self.claims, batching, worker_name, self._monitor
            )
            if batching is not None
            else None
        )

    def run(self, job_id: str, segment: int = 0) -> FailureType | None:
        """Run one segment; return the failure it ended the job with, if it did."""

        def lost_redis(error: Exception) -> None:
            # Redis went away mid-job (a restart). Its state comes back with it: wait for it,
            # put the job back to queued, and run the segment again rather than lose the job.
            log.warning("Redis lost during the job (%s); rerunning once it is back", error)
            through_outage(
                lambda: self.store.transition(job_id, JobStatus.QUEUED, (JobStatus.RUNNING,))
            )

        with job_context(job_id):
            # A worker that batched this segment with its own runs it now, or has, or stores
            # it (this one's finisher, too): wait.
            through_outage(lambda: self.claims.wait_and_take(job_id, segment))
            try:
                return SEGMENT_RERUNS.call_with_retry(
                    lambda: self._run(job_id, segment), lost_redis
                )
            finally:
                through_outage(lambda: self.claims.release(job_id, segment))

    def _run(self, job_id: str, segment: int) -> FailureType | None:
        envelope = self.store.load(job_id)
        if envelope is not None and self.lifecycle.fail_unreadable(job_id, envelope):
            return FailureType.RECORD_UNREADABLE
        if envelope is None or envelope.status.is_final:
            state = "expired" if envelope is None else envelope.status.value
            log.info("nothing to do (%s)", state)
            return None
        assert envelope.spec is not None  # only an unreadable record has none
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
        started_at = envelope.started_at if segment else None
        try:
            self._run_segment(job_id, segment, envelope.spec, started_at)
        except REDIS_ERRORS:
            raise  # not the model's fault: `run` waits for Redis and runs the segment again
        except Exception as exc:  # a model that raises must not take the worker down
            return self._end_for(job_id, exc, envelope.spec)
        return None

    def _run_segment(
        self, job_id: str, index: int, spec: CheckedSpec, started_at: datetime | None
    ) -> None:
        if spec.strength is not None:
            raw = self.store.init_image(job_id)
            if raw is None:
                raise StageError(
                    FailureType.INVALID_JOB, "the job's init_image is missing from the store"
                )
            spec = spec.model_copy(update={"init_image": base64.b64encode(raw).decode()})
        # The gateway checked this spec, but a job can reach Redis by other paths.
        checked = check_job(spec, self.registry, self.limits)
        spec = checked.spec
        segments = plan_segments(spec, self.registry)
        if index == 0:
            pictures = [checked.init_image] * spec.num_images if checked.init_image else None
        else:
            pictures = self._handed_over(job_id, index, spec.num_images)

        began = started_at.timestamp() if started_at else time.time()
        monitor = self._monitor(job_id, spec, began)
        leader = Member(job_id, spec, monitor, None if pictures is None else Pictures(pictures))
        companions: list[Member] = []
        key = batch_key(spec, segments) if index == 0 and self.gatherer else None
        if key is not None:
            assert self.gatherer is not None
            companions = self.gatherer.gather(job_id, key, spec.num_images, monitor.deadline)
        self._run_group(leader, companions, index, segments, key)

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

        through_outage(observe)
        trace = self._trace_so_far(job_id) + [t.model_dump() for t in traces]
        if index + 1 < len(segments):
            pngs = [encode_png(image) for image in images]
            following = segments[index + 1]
            through_outage(lambda: self._hand_over(job_id, index + 1, following, pngs, trace, spec))
            return
        if self.finisher is None:
            self._store_and_finish(job_id, spec, images, trace)
            return
        # The claim is released once the pictures are stored, not when this call returns.
        self.claims.lend(job_id, index)

        def finish() -> None:
            with job_context(job_id):
                try:
                    self._store_and_finish(job_id, spec, images, trace)
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
        hashes = self._lora_hashes(spec)
        pngs = [
            encode_png(image, parameters_text(spec, k, sampler, hashes), public_spec)
            for k, image in enumerate(images)
        ]
        through_outage(lambda: self.store.store_images(job_id, pngs))
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
        self._finish(job_id, JobStatus.SUCCEEDED, images=infos, trace=trace)

    def _monitor(self, job_id: str, spec: CheckedSpec, began: float) -> StepMonitor:
        return StepMonitor(
            self.store,
            job_id,
            planned_steps(spec),
            began + spec.timeout_s,
            self.progress_interval_s,
        )

    def _run_group(
        self,
        leader: Member,
        companions: list[Member],
        index: int,
        segments: list[Segment],
        key: BatchKey | None,
    ) -> None:
        """Segment `index` of the leader's job, with its companions' first segments in the same
        calls (workers.segments.batching). Each companion ends here, whatever happens: as soon as it
        stops or fails, or when the calls are done; the leader's outcome is raised as its run
        alone would raise it."""
        members = [leader, *companions]
        segment = segments[index]
        stages = range(segment.start, segment.end)
        # The memory budget never evicts a model or upscaler this segment still needs.
        needed = [(leader.spec.stages[i].model, leader.spec.stages[i].upscaler) for i in stages]
        self.cache.pinned = frozenset(n for pair in needed for n in pair if n is not None)
        ended: set[str] = set()

        def left(member: Member) -> None:
            if member is not leader:
                self._end_companion(member, segments, None)
                ended.add(member.job_id)

        def run(group: list[Member]) -> None:
            run_group(
                group, stages, self.cache.get, self.worker_name, self.registry.loras,
                self.cache.upscaler, left,
            )  # fmt: skip

        failure: Exception | None = None
        try:
            # Loaded before the calls: a model that cannot load is no batch too big, and its
            # weights are no cost per picture.
            for name, _ in needed:
                self.cache.get(name)
            if key is None or self.batching is None:
                run(members)
            else:
                run_within_memory(run, members, key, self.batching)
        except Exception as exc:  # filed for each member below, as its own run would file it
            failure = exc
        finally:
            self.cache.pinned = frozenset()
        for member in companions:
            if member.job_id not in ended:
                self._end_companion(member, segments, failure)
        outcome = leader.ended or failure
        if outcome is not None:
            raise outcome
        self._complete(leader.job_id, index, leader.spec, segments, leader.pictures, leader.traces)

    def _end_companion(
        self, member: Member, segments: list[Segment], failure: Exception | None
    ) -> None:
        """End a batch companion as its own run would have, and let its claim go."""
        with job_context(member.job_id):
            try:
                self._settle(member, segments, failure)
            except Exception as exc:  # one companion's ending must not strand the others
                log.exception("ending a batched job failed")
                self._fail(
                    member.job_id, FailureType.GENERATION_FAILED, _NOT_STORED + first_line(exc)
                )
            finally:
                through_outage(lambda: self.claims.release(member.job_id, 0))

    def _settle(self, member: Member, segments: list[Segment], failure: Exception | None) -> None:
        outcome = member.ended or failure
        if outcome is not None:
            self._end_for(member.job_id, outcome, member.spec)
        else:
            self._complete(member.job_id, 0, member.spec, segments, member.pictures, member.traces)

    def _end_for(self, job_id: str, exc: Exception, spec: CheckedSpec) -> FailureType | None:
        """End a running job as the exception its segment ended with says; return the failure
        it was filed with, if it was."""
        if isinstance(exc, Stopped):
            if exc.reason == "canceled":
                self._finish(job_id, JobStatus.CANCELED)
                return None
            return self._fail(job_id, FailureType.TIMEOUT, _TIMED_OUT.format(spec.timeout_s))
        if isinstance(exc, JobRejected):
            return self._fail(job_id, FailureType.INVALID_JOB, str(exc))
        if isinstance(exc, ModelUnavailable):
            return self._fail(job_id, FailureType.MODEL_UNAVAILABLE, str(exc))
        if isinstance(exc, StageError):
            return self._fail(job_id, exc.type, str(exc))
        if isinstance(exc, torch.OutOfMemoryError):
            log.error("out of memory", exc_info=exc)
            return self._fail(job_id, FailureType.OUT_OF_MEMORY, _OUT_OF_MEMORY)
        log.error("generation failed", exc_info=exc)
        return self._fail(
            job_id,
            FailureType.GENERATION_FAILED,
            f"generation failed in the model ({type(exc).__name__}); the worker log has "
            f"details. {first_line(exc)}",
        )

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
        policy = QueuePolicy(spec.timeout_s, retries, self.store.result_ttl_s)
        redis = self.store.redis
        with redis.pipeline() as pipe:
            pipe.multi()
            self.store.hand_over(pipe, job_id, index, pngs, trace)
            enqueue_segment(redis, pipe, job_id, index, segment.pool, policy)
            pipe.execute()
        log.info("handed segment %d to pool %s", index, segment.pool)

    def _handed_over(self, job_id: str, index: int, count: int) -> list[Image.Image]:
        pictures = []
        for k in range(count):
            raw = self.store.handed_over(job_id, index, k)
            if raw is None:
                raise StageError(
                    FailureType.INVALID_JOB, f"segment {index}'s input pictures are missing"
                )
            pictures.append(Image.open(io.BytesIO(raw)).convert("RGB"))
        return pictures

    def _lora_hashes(self, spec: CheckedSpec) -> dict[str, str]:
        """A1111's `Lora hashes`: the first 12 hex digits of each used file's SHA-256."""
        names = {u.name for stage in spec.stages for u in stage.loras or ()}
        files = {n: self.registry.loras[n].file for n in names if n in self.registry.loras}
        return {name: file_hash(path) for name, path in files.items()}

    def _trace_so_far(self, job_id: str) -> list[dict[str, object]]:
        raw = self.store.field(job_id, "trace")
        return list(json.loads(raw)) if raw else []

    def _finish(self, job_id: str, status: JobStatus, **fields: object) -> None:
        when = now()
        through_outage(
            lambda: self.lifecycle.end(
                job_id, status, (JobStatus.RUNNING,), finished_at=when, **fields
            )
        )
        log.info("job %s", status.value)

    def _fail(self, job_id: str, type_: FailureType, message: str) -> FailureType | None:
        when = now()
        outcome = through_outage(
            lambda: self.lifecycle.fail(
                job_id, type_, message, allowed_from=(JobStatus.RUNNING,), finished_at=when
            )
        )
        log.info("job failed (%s)", type_.value)
        return type_ if outcome.applied else None
