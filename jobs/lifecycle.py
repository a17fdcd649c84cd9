"""What happens when a job ends, whoever ends it: the gateway (cancel), a worker (success,
failure, cancel at a step) or RQ (a hard timeout, or a worker found dead by the sweep).

`Lifecycle.end` applies the final status (a compare-and-set in `JobStore.transition`), owing the
job's webhook in the same transaction (`jobs.webhooks`), and only if it applied, counts the job
in the metrics and deletes its spent inputs, so nothing happens twice.
`on_rq_failure` is the RQ failure callback; RQ calls it by name, in whichever process saw the
failure — a worker, or the gateway's janitor — so it lives here, torch-free, and not in
`workers`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from contract.checked import CheckedSpec
from contract.envelope import FINAL_STATUSES, FailureType, JobEnvelope, JobError, JobStatus
from jobs import metrics
from jobs.store import JobStore, Transition, now, unreadable
from jobs.webhooks import Webhooks

log = logging.getLogger("imagegen.jobs")

UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobFailed(Exception):
    """Raised by the worker's job function after it has ended a job `failed`, so that RQ files
    the RQ job as failed too (`rq info`, dashboards) instead of finished. `on_rq_failure` sees
    it and only stops RQ from retrying: the envelope already says what happened."""

    def __init__(self, failure: FailureType) -> None:
        super().__init__(f"the job failed ({failure.value}); its envelope says why")
        self.failure = failure


class Lifecycle:
    def __init__(self, store: JobStore, webhooks: Webhooks | None = None) -> None:
        self.store = store
        self.webhooks = webhooks

    def end(
        self,
        job_id: str,
        status: JobStatus,
        allowed_from: Iterable[str] = UNFINISHED,
        finished_at: datetime | None = None,
        **fields: Any,
    ) -> Transition:
        """Move the job to the final `status` if it is in `allowed_from`, owing its webhook in
        the same transaction; then tell the metrics, once."""
        assert status.is_final, status
        finished_at = finished_at or now()
        webhooks, spec = self.webhooks, None
        if webhooks is not None and webhooks.secret is not None:
            spec = _spec(self.store.field(job_id, "spec"))

        def owe_webhook(pipe: Pipeline, written: JobStatus) -> None:
            if webhooks is not None:
                webhooks.owe(self.store.redis, pipe, job_id, written, spec)

        outcome = self.store.transition(
            job_id, status, allowed_from, then=owe_webhook, finished_at=finished_at, **fields
        )
        if outcome.applied:
            self._ended(job_id)
        return outcome

    def fail(
        self,
        job_id: str,
        type_: FailureType,
        message: str,
        allowed_from: Iterable[str] = UNFINISHED,
        finished_at: datetime | None = None,
    ) -> Transition:
        error = JobError(type=type_, message=message)
        return self.end(job_id, JobStatus.FAILED, allowed_from, finished_at, error=error)

    def fail_unreadable(self, job_id: str, envelope: JobEnvelope) -> bool:
        """End a job whose stored record no longer parses (`store.unreadable`), which readers
        already serve as failed; True if this call ended it."""
        if not unreadable(envelope):
            return False
        assert envelope.error is not None
        # Compare-and-set against the stored status as it is, which may itself be what broke.
        stored = self.store.field(job_id, "status")
        if stored is None or stored in FINAL_STATUSES:
            return False
        log.warning("job %s: %s", job_id, envelope.error.message)
        message = envelope.error.message
        failed = self.fail(job_id, FailureType.RECORD_UNREADABLE, message, (*UNFINISHED, stored))
        return failed.applied

    def _ended(self, job_id: str) -> None:
        envelope = self.store.load(job_id)
        if envelope is None:
            return
        model = envelope.spec.stages[0].label if envelope.spec else "unknown"
        with self.store.redis.pipeline(transaction=False) as pipe:
            self.store.drop_inputs(pipe, job_id, envelope.spec)  # its inputs are spent
            metrics.count_job(pipe, envelope.status.value, model)
            if envelope.finished_at is not None:
                seconds = (envelope.finished_at - envelope.created_at).total_seconds()
                metrics.observe_job_seconds(pipe, model, seconds)
            pipe.execute()


def _spec(stored: str | None) -> CheckedSpec | None:
    try:
        return None if stored is None else CheckedSpec.model_validate_json(stored)
    except ValueError:
        return None  # an unreadable record owes no webhook: its URL is not known


class _Process:
    """The lifecycle of this process, for `on_rq_failure` (RQ calls callbacks by name, with no
    way to hand them objects). The gateway and the worker install theirs at start."""

    lifecycle: Lifecycle | None = None


def install(lifecycle: Lifecycle | None) -> None:
    _Process.lifecycle = lifecycle


def _lifecycle_for(connection: Redis, job: Job) -> Lifecycle:
    installed = _Process.lifecycle
    if installed is None:
        log.warning("no lifecycle installed in this process: job %s ends without webhooks", job.id)
        return Lifecycle(JobStore(connection, job.result_ttl or 86400))
    kept = installed.store
    store = JobStore(connection, kept.result_ttl_s, kept.pictures, kept.replication)
    return Lifecycle(store, installed.webhooks)


def on_rq_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException],
    exc: BaseException,
    traceback: TracebackType | Any,
) -> None:
    """RQ saw the job fail outside our own handling: the hard timeout fired, or the worker
    running it died and the sweep found it abandoned. Reflect it in the envelope."""
    if isinstance(exc, JobFailed):
        job.retries_left = 0  # the worker failed it for a reason a rerun would meet again
        return
    lifecycle = _lifecycle_for(connection, job)
    job_id = str(job.args[0]) if job.args else job.id
    if isinstance(exc, JobTimeoutException):
        job.retries_left = 0  # a job that ran out of time would run out again
        lifecycle.fail(
            job_id,
            FailureType.TIMEOUT,
            "the job exceeded the worker's hard time limit and was stopped; ask for fewer steps "
            "or a smaller size",
        )
    elif job.retries_left:
        log.warning("job %s: worker lost, retrying (%s retries left)", job_id, job.retries_left)
        lifecycle.store.transition(job_id, JobStatus.QUEUED, (JobStatus.RUNNING,))
    elif isinstance(exc, AbandonedJobError):
        lifecycle.fail(
            job_id,
            FailureType.WORKER_LOST,
            "the worker running this job stopped (crashed or was killed) and no retries are "
            "left; submit it again",
        )
    else:
        lifecycle.fail(
            job_id,
            FailureType.WORKER_ERROR,
            f"the worker hit an internal error ({exc_type.__name__}) and no retries are left; "
            "submit it again",
        )
