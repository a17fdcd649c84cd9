"""A job's step monitor: progress written (throttled), and the word to stop (cancel, deadline)."""

from __future__ import annotations

import logging
import time

from contract.envelope import Progress
from jobs.outage import REDIS_ERRORS
from jobs.store import JobStore
from workers.stages.outcomes import StopReason

log = logging.getLogger("imagegen.worker")


class StepMonitor:
    """Called at every denoising step: reports progress (throttled) and says when to stop."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        planned: list[float],
        deadline: float,
        interval_s: float,
    ) -> None:
        self.store = store
        self.interval_s = interval_s  # least time between progress writes (and cancel checks)
        self.job_id = job_id
        self.planned = planned
        self.started = time.monotonic()
        self.deadline = deadline  # wall clock: it spans segments run on different hosts
        self.last_report = 0.0

    def __call__(self, stage: int, step: int, steps: int) -> StopReason | None:
        if time.time() > self.deadline:
            return "timeout"
        clock = time.monotonic()
        if clock - self.last_report < self.interval_s and step < steps:
            return None
        self.last_report = clock
        try:
            return self._report(stage, step, steps, clock)
        except REDIS_ERRORS:
            # Redis is away for a moment: keep denoising; the result is stored when it is back.
            log.warning("progress not reported: Redis unavailable")
            return None

    def _report(self, stage: int, step: int, steps: int, clock: float) -> StopReason | None:
        store = self.store
        if store.cancel_requested(self.job_id):
            return "canceled"
        done = sum(self.planned[:stage]) + self.planned[stage] * step / max(steps, 1)
        fraction = min(done / sum(self.planned), 1.0)
        elapsed = clock - self.started
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
        progress = Progress(
            stage=stage + 1,
            stages=len(self.planned),
            step=step,
            steps=steps,
            fraction=round(fraction, 4),
            eta_s=None if eta is None else round(eta, 2),
        )
        store.set_progress(self.job_id, progress)
        return None
