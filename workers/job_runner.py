"""One job, start to finish, on a worker: claim it, run the chain, store PNGs, set the status.

Every way a job can end is a status in the envelope: generation errors become `failed` with a
reason a user can act on (the traceback goes to the worker's log, never to the client).
"""

from __future__ import annotations

import base64
import logging
import time

import torch

from contract.chain_rules import JobLimits, check_job
from contract.envelope import JobError, JobStatus, Progress
from contract.job_store import JobStore, image_url, init_image_key, now
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected
from workers.chain import StageError, Stopped, planned_steps, run_chain
from workers.png import encode_png
from workers.runtime import ModelCache, ModelUnavailable, first_line

log = logging.getLogger("imagegen.worker")

_CLAIMABLE = (JobStatus.QUEUED, JobStatus.RUNNING)  # RUNNING: a retry after a worker died


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        cache: ModelCache,
        registry: ModelRegistry,
        limits: JobLimits,
        progress_interval_s: float = 0.25,
    ) -> None:
        self.store = store
        self.cache = cache
        self.registry = registry
        self.limits = limits
        self.progress_interval_s = progress_interval_s

    def run(self, job_id: str) -> None:
        envelope = self.store.load(job_id)
        if envelope is None or envelope.status.is_final:
            log.info(
                "job %s: nothing to do (%s)",
                job_id,
                "expired" if envelope is None else envelope.status.value,
            )
            return
        if self.store.cancel_requested(job_id):
            self.store.transition(job_id, JobStatus.CANCELED, _CLAIMABLE, finished_at=now())
            return
        started = now()
        if not self.store.transition(
            job_id, JobStatus.RUNNING, _CLAIMABLE, started_at=started
        ).applied:
            return
        log.info("job %s: running", job_id)
        timeout_s = float(self.store.field(job_id, "timeout_s") or 0) or None
        try:
            self._generate(job_id, envelope.spec, timeout_s)
        except Stopped as stop:
            if stop.reason == "canceled":
                self._finish(job_id, JobStatus.CANCELED)
            else:
                self._fail(
                    job_id,
                    "timeout",
                    f"the job ran longer than its {timeout_s:.0f} s "
                    "limit and was stopped; ask for fewer steps or a smaller size",
                )
        except JobRejected as rejected:
            self._fail(job_id, "invalid_job", str(rejected))
        except ModelUnavailable as exc:
            self._fail(job_id, "model_unavailable", str(exc))
        except StageError as exc:
            self._fail(job_id, exc.type, str(exc))
        except torch.OutOfMemoryError:
            log.exception("job %s: out of memory", job_id)
            self._fail(
                job_id,
                "out_of_memory",
                "the worker ran out of GPU memory; ask for a smaller size or fewer images",
            )
        except Exception as exc:  # a model that raises must not take the worker down
            log.exception("job %s: generation failed", job_id)
            self._fail(
                job_id,
                "generation_failed",
                f"generation failed in the model ({type(exc).__name__}); the worker log "
                f"has details. {first_line(exc)}",
            )

    def _generate(self, job_id: str, spec: JobSpec, timeout_s: float | None) -> None:
        if spec.strength is not None:
            raw = self.store.redis.get(init_image_key(job_id))
            if not isinstance(raw, bytes):
                raise StageError("invalid_job", "the job's init_image is missing from the store")
            spec = spec.model_copy(update={"init_image": base64.b64encode(raw).decode()})
        checked = check_job(spec, self.registry, self.limits)
        spec = checked.spec
        monitor = _Monitor(self, job_id, planned_steps(spec), timeout_s)
        images, traces = run_chain(spec, checked.init_image, self.cache.get, monitor)
        assert spec.seed is not None
        pngs = [encode_png(image) for image in images]
        self.store.store_images(job_id, pngs)
        infos = [
            {
                "index": k,
                "url": image_url(job_id, k),
                "width": im.width,
                "height": im.height,
                "seed": spec.seed + k,
            }
            for k, im in enumerate(images)
        ]
        self._finish(
            job_id, JobStatus.SUCCEEDED, images=infos, trace=[t.model_dump() for t in traces]
        )

    def _finish(self, job_id: str, status: JobStatus, **fields: object) -> None:
        self.store.transition(job_id, status, (JobStatus.RUNNING,), finished_at=now(), **fields)
        log.info("job %s: %s", job_id, status.value)

    def _fail(self, job_id: str, type_: str, message: str) -> None:
        self._finish(job_id, JobStatus.FAILED, error=JobError(type=type_, message=message))


class _Monitor:
    """Called at every denoising step: reports progress (throttled) and says when to stop."""

    def __init__(
        self, runner: JobRunner, job_id: str, planned: list[float], timeout_s: float | None
    ) -> None:
        self.runner = runner
        self.job_id = job_id
        self.planned = planned
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s if timeout_s else None
        self.last_report = 0.0

    def __call__(self, stage: int, step: int, steps: int) -> str | None:
        clock = time.monotonic()
        if self.deadline is not None and clock > self.deadline:
            return "timeout"
        if clock - self.last_report < self.runner.progress_interval_s and step < steps:
            return None
        self.last_report = clock
        store = self.runner.store
        if store.cancel_requested(self.job_id):
            return "canceled"
        done = sum(self.planned[:stage]) + self.planned[stage] * step / max(steps, 1)
        fraction = min(done / sum(self.planned), 1.0)
        elapsed = clock - self.started
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
        store.set_progress(
            self.job_id,
            Progress(
                stage=stage + 1,
                stages=len(self.planned),
                step=step,
                steps=steps,
                fraction=round(fraction, 4),
                eta_s=None if eta is None else round(eta, 2),
            ),
        )
        return None
