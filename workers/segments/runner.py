"""One segment of a job on a worker, executed: its inputs, its rules checked again, its batch
companions gathered, its stages run, each member's outcome handed to its state.

Every way a job can end is a status in the envelope (workers.segments.state files it):
generation errors become `failed` with a reason a user can act on (the traceback goes to the
worker's log, never to the client).
"""

from __future__ import annotations

import base64
import logging
import time

from contract.checked import CheckedSpec
from contract.envelope import FailureType
from contract.job_cost import planned_steps
from contract.job_rules import CheckedJob, JobLimits, check_job
from contract.registry import ModelRegistry
from contract.segments import Segment, plan_segments
from contract.stage_images import has_stage_images, with_stage_images
from jobs.claims import Claims
from jobs.lifecycle import Lifecycle
from jobs.logs import job_context
from jobs.outage import REDIS_ERRORS, SEGMENT_RERUNS
from workers.models.cache import ModelCache
from workers.segments.batching import Batching, BatchKey, batch_key, run_within_memory
from workers.segments.finisher import Finisher
from workers.segments.gathering import Gatherer
from workers.segments.progress import StepMonitor
from workers.segments.state import SegmentState
from workers.stages.chain import Components, Member, Pictures, run_group
from workers.stages.outcomes import Failed, Outcome

log = logging.getLogger("imagegen.worker")


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
        self.finisher = finisher
        claims = Claims(self.store.redis, worker_name, claim_ttl_s)
        self.state = SegmentState(lifecycle, registry, claims, worker_name, finisher)
        self.gatherer = None
        if batching is not None:
            self.gatherer = Gatherer(
                self.store, registry, claims, batching, worker_name, self._checked, self._monitor
            )

    def run(self, job_id: str, segment: int = 0) -> FailureType | None:
        """Run one segment; return the failure it ended the job with, if it did."""

        def lost_redis(error: Exception) -> None:
            # Redis went away mid-job (a restart). Its state comes back with it: wait for it,
            # put the job back to queued, and run the segment again rather than lose the job.
            log.warning("Redis lost during the job (%s); rerunning once it is back", error)
            self.state.rerun(job_id)

        with job_context(job_id), self.state.held(job_id, segment):
            return SEGMENT_RERUNS.call_with_retry(lambda: self._run(job_id, segment), lost_redis)

    def _run(self, job_id: str, index: int) -> FailureType | None:
        started = self.state.start(job_id, index)
        if started is None or isinstance(started, FailureType):
            return started
        spec = started.spec
        assert spec is not None  # only an unreadable record has none
        began = started.started_at.timestamp() if index and started.started_at else time.time()
        segments: list[Segment] | None = None
        try:
            checked = self._checked(job_id, spec)
            spec, segments = checked.spec, plan_segments(checked.spec, self.registry)
            outcome = self._execute(job_id, index, checked, segments, began)
        except REDIS_ERRORS:
            raise  # not the model's fault: `run` waits for Redis and runs the segment again
        except Exception as exc:  # the job's inputs or rules, or a model that cannot load
            outcome = Failed.of(exc)
        return self.state.end(job_id, index, spec, segments, outcome)

    def _checked(self, job_id: str, spec: CheckedSpec) -> CheckedJob:
        """The spec with its init and control images from the store, checked again: the gateway
        checked it, but a job can reach Redis by other paths."""
        if spec.has_init_image:
            raw = self.state.init_image(job_id)
            spec = spec.model_copy(update={"init_image": base64.b64encode(raw).decode()})
        if has_stage_images(spec):
            spec = with_stage_images(spec, self.store.stage_images(job_id))
        return check_job(spec, self.registry, self.limits)

    def _execute(
        self, job_id: str, index: int, checked: CheckedJob, segments: list[Segment], began: float
    ) -> Outcome:
        """Run segment `index`, with companions gathered if it may batch; return its outcome
        (each companion's is filed as soon as it ends)."""
        spec = checked.spec
        monitor = self._monitor(job_id, spec, began)
        if index == 0:
            leader = Member.first(job_id, checked, monitor)
        else:
            pictures = self.state.handed_over(job_id, index, spec.num_images)
            # The job's mask, for its masked hires stages in this segment.
            leader = Member(job_id, spec, monitor, Pictures(pictures), mask=checked.mask)
        companions: list[Member] = []
        key = batch_key(spec, segments) if index == 0 and self.gatherer else None
        if key is not None:
            assert self.gatherer is not None
            companions = self.gatherer.gather(job_id, key, spec.num_images, monitor.deadline)
        return self._run_group(leader, companions, index, segments, key)

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
    ) -> Outcome:
        """Segment `index` of the leader's job, with its companions' first segments in the same
        calls (workers.segments.batching). Each companion ends here, whatever happens: as soon
        as it stops or fails, or when the calls are done; the leader's outcome is returned."""
        members = [leader, *companions]
        segment = segments[index]
        stages = range(segment.start, segment.end)
        # The memory budget never evicts a model or upscaler this segment still needs.
        needed = [(leader.spec.stages[i].model, leader.spec.stages[i].upscaler) for i in stages]
        self.cache.pinned = frozenset(n for pair in needed for n in pair if n is not None)
        ended: set[str] = set()

        def end(member: Member) -> None:
            assert member.outcome is not None, "a member ends with an outcome"
            self.state.end_companion(member.job_id, member.spec, segments, member.outcome)
            ended.add(member.job_id)

        def left(member: Member) -> None:
            if member is not leader:
                end(member)

        components = Components.of(self.cache)

        def run(group: list[Member]) -> None:
            run_group(group, stages, self.cache.get, self.worker_name, components, left)

        try:
            # Loaded before the calls: a model that cannot load is no batch too big, and its
            # weights are no cost per picture.
            for name, _ in needed:
                if name is not None:  # an upscale stage runs no model
                    self.cache.get(name)
            if key is None or self.batching is None:
                run(members)
            else:
                run_within_memory(run, members, key, self.batching)
        except REDIS_ERRORS:
            raise
        except Exception as exc:  # a model that cannot load: every member fails by it
            failure = Failed.of(exc)
            for member in members:
                member.outcome = member.outcome or failure
        finally:
            self.cache.pinned = frozenset()
        for member in companions:
            if member.job_id not in ended:
                end(member)
        assert leader.outcome is not None, "run_group ends every member"
        return leader.outcome
