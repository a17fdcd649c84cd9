"""The functions RQ calls by name (the queue payload names them as strings, in JSON)."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from contract import webhooks
from contract.envelope import JobError, JobStatus
from contract.job_store import JobStore, now
from workers.job_runner import JobRunner

log = logging.getLogger("imagegen.worker")


# The runner the worker process installs at start (`workers.worker.main`): RQ calls job
# functions by name, so this is how a job finds the pipelines its process keeps loaded.
_runner: JobRunner | None = None


def install_runner(runner: JobRunner | None) -> None:
    global _runner
    _runner = runner


def run_job(job_id: str, segment: int = 0) -> None:
    if _runner is None:
        raise RuntimeError("run_job needs the imagegen worker (python -m workers), not plain rq")
    _runner.run(job_id, segment)


def on_rq_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException],
    exc: BaseException,
    traceback: TracebackType | Any,
) -> None:
    """RQ saw the job fail outside our own handling: the hard timeout fired, or the worker
    running it died and the job was found abandoned. Reflect it in the envelope."""
    store = JobStore(connection, job.result_ttl or 86400, webhooks.installed())
    job_id = str(job.args[0]) if job.args else job.id
    if isinstance(exc, JobTimeoutException):
        job.retries_left = 0  # a job that ran out of time would run out again
        error = JobError(
            type="timeout",
            message="the job exceeded the worker's hard time limit and was stopped; ask for "
            "fewer steps or a smaller size",
        )
    elif job.retries_left:
        log.warning("job %s: worker lost, retrying (%s retries left)", job_id, job.retries_left)
        store.transition(job_id, JobStatus.QUEUED, (JobStatus.RUNNING,))
        return
    elif isinstance(exc, AbandonedJobError):
        error = JobError(
            type="worker_lost",
            message="the worker running this job stopped (crashed or was killed) and no "
            "retries are left; submit it again",
        )
    else:
        error = JobError(
            type="worker_error",
            message=f"the worker hit an internal error ({exc_type.__name__}) and no retries "
            "are left; submit it again",
        )
    unfinished = (JobStatus.QUEUED, JobStatus.RUNNING)
    store.transition(job_id, JobStatus.FAILED, unfinished, finished_at=now(), error=error)
