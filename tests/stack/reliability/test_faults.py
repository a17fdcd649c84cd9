"""Faults: a model that raises, kill -9 of workers mid-job, a Redis restart. Nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from typing import Any

import pytest
from redis import Redis
from rq.job import Job

from jobs.disclosure import public_worker_name
from jobs.redis_keys import job_key
from jobs.settings import REPO_ROOT
from tests.conftest import Stack
from tests.helpers import submit_and_wait

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("faults")]

# Each kill costs a worker start-up (~10 s of CPU here): `make test` kills twice, `make soak` 10.
KILLS = int(os.environ.get("IMAGEGEN_TEST_KILLS", "2"))

FINAL = {"succeeded", "failed", "canceled"}
ARTIFACTS = REPO_ROOT / "test-artifacts"


def spec(seed: int, steps: int = 30, model: str = "demo-sd15") -> dict[str, Any]:
    return {
        "prompt": "fault",
        "seed": seed,
        "width": 256,
        "height": 256,
        "stages": [{"model": model, "steps": steps}],
    }


def statuses(redis: Redis, ids: list[str]) -> dict[str, str]:
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(job_key(job_id), "status")
        return {
            i: (s.decode() if s else "missing") for i, s in zip(ids, pipe.execute(), strict=True)
        }


def wait_all_final(redis: Redis, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        now = statuses(redis, ids)
        if all(s in FINAL for s in now.values()) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_models_that_fail_fail_their_jobs_and_the_worker_keeps_serving(fault_stack: Stack) -> None:
    with fault_stack.client() as client:
        corrupt = submit_and_wait(client, spec(1, 2, "corrupt-weights"))
        raising = submit_and_wait(client, spec(1, 2, "raises-in-diffusers"))
        healthy = submit_and_wait(client, spec(1, 2))
    assert corrupt["status"] == "failed"
    assert corrupt["error"]["type"] == "model_unavailable"
    assert "corrupt-weights" in corrupt["error"]["message"]
    assert raising["status"] == "failed"
    assert raising["error"]["type"] == "generation_failed"
    assert "ValueError" in raising["error"]["message"]
    for error in (corrupt["error"], raising["error"]):
        assert "Traceback" not in error["message"]
        assert 'File "' not in error["message"]
    assert healthy["status"] == "succeeded"
    assert all(p.poll() is None for p in fault_stack.workers)


def running_job(
    redis: Redis, ids: list[str], timeout: float = 60, skip: set[str] | None = None
) -> tuple[str, str, int]:
    """A job that is running on a live worker, with that worker's name and pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job_id in ids:
            if skip and job_id in skip:
                continue
            status, worker, progress = redis.hmget(
                job_key(job_id), ["status", "worker", "progress"]
            )
            if status == b"running" and worker and progress:
                name = worker.decode()
                pid = int(name.split(".")[-2])
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                return job_id, name, pid
        time.sleep(0.05)
    raise AssertionError("no job was running")


def test_kill_9_repeatedly_across_a_stream_of_jobs(fault_stack: Stack) -> None:
    """Kill the worker of a running job KILLS times while a second worker stays alive. Recovery
    is the time from the kill until the job is back in the queue (or running elsewhere)."""
    redis = fault_stack.redis
    ids: list[str] = []
    requeued = []
    killed: set[str] = set()
    with fault_stack.client() as client:
        for kill in range(KILLS):
            # Keep a short stream going: a few jobs waiting behind the running ones.
            waiting = sum(s == "queued" for s in statuses(redis, ids).values())
            ids += [
                client.post("/jobs", json=spec(100 * kill + k, steps=40)).json()["id"]
                for k in range(max(0, 3 - waiting))
            ]
            # A different job each time, so that no job runs out of retries by design.
            job_id, victim, pid = running_job(redis, ids, skip=killed)
            killed.add(job_id)
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            fault_stack.start_worker(wait=False)  # the replacement a supervisor would start
            while time.monotonic() - killed_at < 60:
                status, worker = redis.hmget(job_key(job_id), ["status", "worker"])
                elsewhere = status == b"running" and worker and worker.decode() != victim
                if status != b"running" or elsewhere:
                    requeued.append(round(time.monotonic() - killed_at, 2))
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"job {job_id} still running on a dead worker after 60 s")
    final = wait_all_final(redis, ids, timeout=240)
    assert all(s in FINAL for s in final.values()), [s for s in final.values() if s not in FINAL]
    with fault_stack.client() as client:
        for job_id, status in final.items():
            if status == "failed":
                error = client.get(f"/jobs/{job_id}").json()["error"]
                assert error["type"] == "worker_lost", error
    summary = {
        "kills": KILLS,
        "jobs": len(ids),
        "succeeded": sum(s == "succeeded" for s in final.values()),
        "failed_worker_lost": sum(s == "failed" for s in final.values()),
        "requeued_after_kill_s": sorted(requeued),
        "requeued_median_s": statistics.median(requeued),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "kill-recovery.json").write_text(json.dumps(summary, indent=2))
    assert max(requeued) < 30, summary
    assert summary["succeeded"] == len(ids), summary  # each job was killed at most once


def test_redis_restart_loses_no_queued_job(fault_stack: Stack) -> None:
    redis = fault_stack.redis
    with fault_stack.client() as client:
        ids = [client.post("/jobs", json=spec(500 + seed)).json()["id"] for seed in range(8)]
        running_job(redis, ids)
        alive = [p for p in fault_stack.workers if p.poll() is None]
        fault_stack.redis_server.stop()
        down = [
            client.post("/jobs", json=spec(1)),
            client.get(f"/jobs/{ids[0]}"),
            client.get("/readyz"),
        ]
        assert [r.status_code for r in down] == [503, 503, 503]
        assert all(r.headers.get("retry-after") for r in down)
        assert client.get("/healthz").status_code == 200
        time.sleep(2)
        fault_stack.redis_server.start()  # same port and folder: the AOF brings everything back
        final = wait_all_final(redis, ids, timeout=120)
        errors = [
            client.get(f"/jobs/{i}").json()["error"] for i, s in final.items() if s != "succeeded"
        ]
        assert set(final.values()) == {"succeeded"}, errors
        assert alive
        assert all(p.poll() is None for p in alive), "a worker died with Redis"
        # The workers reconnected by themselves and take new work.
        assert submit_and_wait(client, spec(9, 2))["status"] == "succeeded"
        envelope = client.get(f"/jobs/{ids[-1]}").json()
        png = client.get(envelope["images"][0]["url"])
        assert png.status_code == 200


def test_kill_9_mid_batch_runs_every_member_again_and_each_ends_once(fault_stack: Stack) -> None:
    """Both workers busy, four jobs of one shape queue up; the first worker free runs them as
    one batch. Killed mid-batch, every member runs again elsewhere and succeeds, once."""
    redis = fault_stack.redis
    with fault_stack.client() as client:
        blockers = [
            client.post("/jobs", json=spec(900 + k, steps=41)).json()["id"] for k in range(2)
        ]
        members = [
            client.post("/jobs", json=spec(910 + k, steps=60)).json()["id"] for k in range(4)
        ]
        deadline = time.monotonic() + 120
        batch: list[str] = []
        while time.monotonic() < deadline and len(batch) < 2:
            rows = [redis.hmget(job_key(j), ["status", "worker", "progress"]) for j in members]
            workers = [w.decode() for s, w, p in rows if s == b"running" and w and p]
            victim = max(set(workers), key=workers.count) if workers else None
            batch = [
                job_id
                for job_id, (s, w, p) in zip(members, rows, strict=True)
                if victim and w and w.decode() == victim and s == b"running" and p
            ]
            time.sleep(0.05)
        assert len(batch) >= 2, "no batch ran"
        assert victim is not None
        os.kill(int(victim.split(".")[-2]), signal.SIGKILL)
        fault_stack.start_worker(wait=False)
        final = wait_all_final(redis, blockers + members, timeout=240)
        assert set(final.values()) == {"succeeded"}, final
        for job_id in batch:
            envelope = client.get(f"/jobs/{job_id}").json()
            assert {t["worker"] for t in envelope["trace"]} != {public_worker_name(victim)}
            # Killed once, run once more: never twice to the end.
            assert redis.hget(job_key(job_id), "attempts:0") == b"2"
            assert len(envelope["images"]) == 1


def test_kill_9_while_the_finisher_stores_a_job_runs_it_again(fault_stack: Stack) -> None:
    """The job's RQ call has returned (RQ says finished, for a second; the record `finishing:0`)
    and its PNGs are being encoded on the finisher thread when the worker dies: the janitor
    queues the job again once its claim has expired, and it succeeds, run twice, ended once."""
    redis = fault_stack.redis
    big = {**spec(77, steps=1), "width": 1024, "height": 1024, "num_images": 4}
    with fault_stack.client() as client:
        job_id = client.post("/jobs", json=big).json()["id"]
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline:
            returned = redis.hget(Job.key_for(job_id), "status") in (None, b"finished")
            status, worker, finishing = redis.hmget(
                job_key(job_id), ["status", "worker", "finishing:0"]
            )
            if returned and finishing and status == b"running" and worker:
                victim = worker.decode()
                os.kill(int(victim.split(".")[-2]), signal.SIGKILL)
                break
            assert status in (b"queued", b"running"), "it ended before the kill"
            time.sleep(0.002)
        assert victim is not None, "never caught between its call and its storing"
        fault_stack.start_worker(wait=False)
        final = wait_all_final(redis, [job_id], timeout=120)
        assert final == {job_id: "succeeded"}
        envelope = client.get(f"/jobs/{job_id}").json()
        assert len(envelope["images"]) == 4
        assert redis.hget(job_key(job_id), "attempts:0") == b"2"
        assert {t["worker"] for t in envelope["trace"]} != {public_worker_name(victim)}


def test_a_worker_cut_off_mid_job_is_replaced_and_its_late_outcome_dropped(
    fault_stack: Stack,
) -> None:
    """Another host's worker, cut off mid-job (SIGSTOP: as a paused VM or a host off the network,
    its process alive but silent): its heartbeat lapses, the job runs again on the live worker
    and succeeds there. When the cut-off one comes back (SIGCONT) and finishes its run, nothing
    of it is filed: the job stays as the live worker ended it, pictures included."""
    redis = fault_stack.redis
    with fault_stack.client() as client:
        job_id = client.post("/jobs", json=spec(91, steps=60)).json()["id"]
        deadline = time.monotonic() + 60
        while redis.hget(job_key(job_id), "status") != b"running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        victim = redis.hget(job_key(job_id), "worker")
        assert victim is not None
        pid = int(victim.decode().split(".")[-2])
        [paused] = [p for p in fault_stack.workers if p.pid == pid]
        os.kill(pid, signal.SIGSTOP)
        try:
            final = wait_all_final(redis, [job_id], timeout=120)
            assert final == {job_id: "succeeded"}
            ended = client.get(f"/jobs/{job_id}").json()
            png = client.get(ended["images"][0]["url"]).content
            assert {t["worker"] for t in ended["trace"]} != {public_worker_name(victim.decode())}
        finally:
            os.kill(pid, signal.SIGCONT)
        log = fault_stack.logs / f"worker-{fault_stack.workers.index(paused)}.log"
        deadline = time.monotonic() + 120
        while "outcome is dropped" not in log.read_text():
            assert time.monotonic() < deadline, "the cut-off worker never finished its run"
            time.sleep(0.2)
        assert client.get(f"/jobs/{job_id}").json() == ended
        assert client.get(ended["images"][0]["url"]).content == png
        assert redis.hget(job_key(job_id), "attempts:0") == b"2"  # run twice, filed once
