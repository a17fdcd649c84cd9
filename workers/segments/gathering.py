"""Finding the queued jobs a batch leader can run with (workers.segments.batching), and claiming
them.

A companion is a queued job whose first segment has the leader's batch key
(workers.segments.batching). Claiming it makes it `running` on this worker and takes its claim
(jobs.claims); its RQ job stays in the queue, so if this worker dies, whichever worker takes that
RQ job runs it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from contract.checked import CheckedSpec
from contract.envelope import JobStatus
from contract.job_rules import CheckedJob
from contract.registry import ModelRegistry
from contract.segments import plan_segments
from jobs.claims import Claims
from jobs.outage import REDIS_ERRORS
from jobs.queues import HARD_TIMEOUT_MARGIN_S, pool_queue
from jobs.redis_keys import rq_job_id
from jobs.store import JobStore, now
from workers.segments.batching import Batching, BatchKey, batch_key, start_key
from workers.stages.chain import Member, StepMonitor


class Gatherer:
    def __init__(
        self,
        store: JobStore,
        registry: ModelRegistry,
        claims: Claims,
        batching: Batching,
        worker_name: str,
        read: Callable[[str, CheckedSpec], CheckedJob],
        monitor: Callable[[str, CheckedSpec, float], StepMonitor],
    ) -> None:
        self.store = store
        self.registry = registry
        self.claims = claims
        self.batching = batching
        self.worker_name = worker_name
        self.read = read  # (job id, stored spec) -> checked again, with its pictures
        self.monitor = monitor  # (job id, spec, started) -> its step monitor

    def gather(self, leader: str, key: BatchKey, images: int, ends_by: float) -> list[Member]:
        """Queued jobs whose first segment fits `key` and whose time limit ends by the leader's,
        `ends_by` (with some slack), claimed for this worker: as many as are there, or arrive
        within the gather window while other jobs are queued, up to the batch's size."""
        cap = self.batching.capacity(key)
        members: list[Member] = []
        passed: set[str] = {leader}
        queue = pool_queue(self.store.redis, self.batching.pool)
        deadline = time.monotonic() + self.batching.window_s
        while images < cap:
            queued = queue.get_job_ids(0, 64)
            for rq_id in queued:
                if rq_id in passed or images >= cap:
                    continue
                passed.add(rq_id)  # one look per gather, whatever it finds
                member = self._claim(rq_id, key, cap - images, ends_by)
                if member is not None:
                    members.append(member)
                    images += member.spec.num_images
            # The window is spent only while the pool is busy: a lone job never waits.
            if time.monotonic() >= deadline or not set(queued) - {leader}:
                break
            time.sleep(0.005)
        return members

    def _claim(self, job_id: str, key: BatchKey, room: int, ends_by: float) -> Member | None:
        """The queued job as a batch member if it fits; it is then `running` on this worker,
        claimed (its RQ job stays queued: if this worker dies, that job runs it again)."""
        if rq_job_id(job_id, 0) != job_id:
            return None  # a later segment
        envelope = self.store.load(job_id)
        if envelope is None or envelope.status is not JobStatus.QUEUED or envelope.spec is None:
            return None
        stored = envelope.spec
        # Its pictures are read and decoded only for a job that could fit: the leader's model
        # and size, started alike, with room for its pictures, ending in time.
        leading = json.loads(key.stages[0])["model"]
        if (
            stored.stages[0].model != leading
            or stored.size_of(0) != key.sizes[0]
            or start_key(stored) != key.start
            or stored.num_images > room
            or self._outlives(stored, ends_by)
        ):
            return None
        try:
            checked = self.read(job_id, stored)
        except REDIS_ERRORS:
            raise
        except Exception:  # broken rules, a picture missing: its own run fails it, saying why
            return None
        spec = checked.spec
        fits = batch_key(spec, plan_segments(spec, self.registry)) == key
        if not fits or not self.claims.take(job_id, 0):
            return None
        ran = self.store.transition(
            job_id, JobStatus.RUNNING, (JobStatus.QUEUED,), worker=self.worker_name,
            started_at=now(),
        )  # fmt: skip
        if not ran.applied:  # canceled, or taken, meanwhile
            self.claims.release(job_id, 0)
            return None
        self.store.count_attempt(job_id, 0)
        monitor = self.monitor(job_id, spec, time.time())
        return Member.first(job_id, checked, monitor)

    @staticmethod
    def _outlives(spec: CheckedSpec, ends_by: float) -> bool:
        """RQ stops the leader's call at the leader's limit plus HARD_TIMEOUT_MARGIN_S, and every
        member's pictures with it: a member must have been stopped by its own by then."""
        return time.time() + spec.timeout_s > ends_by + HARD_TIMEOUT_MARGIN_S / 2
