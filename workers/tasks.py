"""The function RQ calls by name (the queue payload names it as a string, in JSON)."""

from __future__ import annotations

from jobs.lifecycle import JobFailed
from workers.segments.runner import JobRunner

# The runner the worker process installs at start (`workers.worker.main`): RQ calls job
# functions by name, so this is how a job finds the pipelines its process keeps loaded.
_runner: JobRunner | None = None


def install_runner(runner: JobRunner | None) -> None:
    global _runner
    _runner = runner


def installed_runner() -> JobRunner | None:
    return _runner


def run_job(job_id: str, segment: int = 0) -> None:
    if _runner is None:
        raise RuntimeError("run_job needs the imagegen worker (python -m workers), not plain rq")
    failure = _runner.run(job_id, segment)
    if failure is not None:
        # The envelope says failed already; raising files the RQ job as failed too, so that
        # `rq info` and dashboards agree with the API (`on_rq_failure` stops RQ retrying it).
        raise JobFailed(failure)
