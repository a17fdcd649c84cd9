"""A burst of jobs (100; 500 in `make soak`) from 32 concurrent clients against two workers:
every job ends, exactly once, and its image can be fetched."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from jobs.redis_keys import OUTSTANDING, job_key
from tests.conftest import Stack
from tests.stack.reliability.test_faults import ARTIFACTS, FINAL, wait_all_final

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("faults")]

# `make test` sends 100 jobs, `make soak` 500.
JOBS, CLIENTS = int(os.environ.get("IMAGEGEN_TEST_BURST_JOBS", "100")), 32


def test_burst_of_jobs_from_32_clients(fault_stack: Stack) -> None:
    local = threading.local()
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=fault_stack.url, timeout=60)
            clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    def submit(seed: int) -> tuple[int, str]:
        spec = {
            "prompt": f"burst {seed}",
            "seed": seed,
            "width": 64,
            "height": 64,
            "stages": [{"model": "demo-sd15", "steps": 2}],
        }
        response = client().post("/jobs", json=spec)
        return response.status_code, response.json()["id"]

    def check(job_id: str) -> dict[str, Any]:
        envelope: dict[str, Any] = client().get(f"/jobs/{job_id}").json()
        png = client().get(envelope["images"][0]["url"]) if envelope["images"] else None
        envelope["png_ok"] = (
            png is not None and png.status_code == 200 and png.content[:4] == b"\x89PNG"
        )
        return envelope

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        admitted = list(pool.map(submit, range(JOBS)))
    assert {code for code, _ in admitted} == {202}
    ids = [job_id for _, job_id in admitted]
    assert len(set(ids)) == JOBS

    final = wait_all_final(fault_stack.redis, ids, timeout=300)
    assert all(s in FINAL for s in final.values())
    elapsed = time.monotonic() - started
    with ThreadPoolExecutor(CLIENTS) as pool:
        envelopes = list(pool.map(check, ids))
    for each in clients:
        each.close()
    assert [e["status"] for e in envelopes] == ["succeeded"] * JOBS
    assert all(e["png_ok"] for e in envelopes)
    # Exactly once: every job's only segment ran one time.
    with fault_stack.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(job_key(job_id), "attempts:0")
        attempts = pipe.execute()
    assert [int(a) for a in attempts] == [1] * JOBS
    assert fault_stack.redis.zcard(OUTSTANDING) == 0
    assert fault_stack.redis.llen("rq:queue:imagegen.default") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "burst.json").write_text(
        json.dumps(
            {
                "jobs": JOBS,
                "clients": CLIENTS,
                "workers": 2,
                "succeeded": JOBS,
                "ran_once": JOBS,
                "seconds_to_all_final": round(elapsed, 1),
            }
        )
    )
