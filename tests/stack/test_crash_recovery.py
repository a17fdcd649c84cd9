"""kill -9 of a worker mid-job, with the default heartbeat and sweep settings: the job is retried
on a live worker within 30 s. Runs on the shared stack.

What happens once the retries are spent is tested without killing anything, by planting an
abandoned job (`tests/jobs/test_janitor.py`, `tests/stack/test_gateway_without_workers.py`)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from jobs.disclosure import public_worker_name
from jobs.redis_keys import job_key
from jobs.settings import REPO_ROOT
from tests.conftest import Stack
from tests.stack.test_job_control import slow_spec, wait_running

# Ten seconds of heartbeat TTL and a second worker start: `make soak` runs it, `make test` runs
# the same kill with short TTLs (tests/stack/reliability/test_faults.py).
pytestmark = [pytest.mark.stack, pytest.mark.soak, pytest.mark.xdist_group("stack")]

ARTIFACTS = REPO_ROOT / "test-artifacts"


def running_worker(stack: Stack, job_id: str) -> tuple[str, int]:
    name = stack.redis.hget(job_key(job_id), "worker")
    assert name is not None
    worker = name.decode()
    return worker, int(worker.split(".")[-2])  # names are <prefix>.<pid>.<random>


def watch_until_final(
    stack: Stack, http: Any, job_id: str, victim: str, killed_at: float
) -> dict[str, Any]:
    """Poll after the kill; note when another worker picked the job up."""
    rerun_after = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        envelope = http.get(f"/jobs/{job_id}").json()
        if envelope["status"] in ("succeeded", "failed", "canceled"):
            return {
                "envelope": envelope,
                "rerun_after_s": rerun_after,
                "final_after_s": time.monotonic() - killed_at,
            }
        holder, _ = running_worker(stack, job_id)
        if rerun_after is None and envelope["status"] == "running" and holder != victim:
            rerun_after = time.monotonic() - killed_at
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish after the kill")


def test_kill_9_mid_job_retries_it_on_a_live_worker(stack: Stack) -> None:
    stack.start_worker()  # a second worker of the same pool
    with stack.client() as http:
        job_id = http.post("/jobs", json=slow_spec()).json()["id"]
        wait_running(http, job_id)
        victim, pid = running_worker(stack, job_id)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        result = watch_until_final(stack, http, job_id, victim, killed_at)
    envelope = result["envelope"]
    assert envelope["status"] == "succeeded", envelope["error"]
    assert {t["worker"] for t in envelope["trace"]} != {public_worker_name(victim)}
    assert result["rerun_after_s"] is not None
    assert result["rerun_after_s"] < 30, result
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "recovery.json").write_text(json.dumps(result["rerun_after_s"]))
