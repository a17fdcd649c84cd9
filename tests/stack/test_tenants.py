"""One key cannot starve the others: pictures that cost CPU to decode and many large bodies at
once leave health checks answered and other keys served; a key's backlog does not delay another
key's next job.

A gateway process of its own (real uvicorn, API keys for alice and bob, a 2048² pixel budget)
on the session's private Redis, no worker: admitted jobs stay queued.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from redis import Redis

from app.keys import digest
from app.uploads import LARGE_BODY_BYTES
from devstack.processes import (
    start_gateway,
    start_webhook_worker,
    start_worker,
    stop,
    wait_for_gateway,
    wait_for_rq_worker,
    wait_for_workers,
)
from devstack.redis_server import RedisServer, free_port
from jobs.settings import REPO_ROOT
from jobs.webhooks import WEBHOOK_QUEUE
from tests.helpers import many_scans_jpeg_b64, png_b64
from tests.receiver import WEBHOOK_SECRET, Receiver

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

ALICE, BOB = "ig_alice_tenant", "ig_bob_tenant"
ARTIFACTS = REPO_ROOT / ".artifacts"


def spec(init_image: str, side: int) -> dict[str, Any]:
    return {
        "prompt": "a tenant",
        "width": side,
        "height": side,
        "init_image": init_image,
        "stages": [{"model": "demo-sd15", "steps": 2}],
    }


def noise_png_b64(side: int) -> str:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gateway(
    redis_server: RedisServer, registry_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/5",
        "IMAGEGEN_REGISTRY": str(registry_file),
        "IMAGEGEN_MAX_PIXELS": str(2048 * 2048),
        "IMAGEGEN_API_KEYS": json.dumps({"alice": digest(ALICE), "bob": digest(BOB)}),
        "IMAGEGEN_MAX_UPLOADS_PER_KEY": "4",
    }
    log = tmp_path_factory.mktemp("tenants") / "gateway.log"
    process = start_gateway(env, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(url, process)
        yield url
    finally:
        stop(process)


def probe_health(url: str, stop_probing: threading.Event, waits: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop_probing.is_set():
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            waits.append(time.perf_counter() - started)
            time.sleep(0.05)


def posted_while_probing(
    url: str, bodies: list[tuple[dict[str, object], str]]
) -> tuple[list[httpx.Response], list[float], float]:
    """Post every body at once while /healthz is asked every 50 ms: the answers, each health
    check's wait, and the seconds it all took."""
    waits: list[float] = []
    stop_probing = threading.Event()
    prober = threading.Thread(target=probe_health, args=(url, stop_probing, waits))
    prober.start()

    def post(body: dict[str, object], key: str) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as http:
            return http.post("/jobs", json=body, headers=bearer(key))

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            answers = [f.result() for f in [pool.submit(post, *b) for b in bodies]]
    finally:
        stop_probing.set()
        prober.join()
    assert waits  # probed while they were answered
    return answers, waits, time.perf_counter() - started


def record(name: str, figures: dict[str, object]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "tenants.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**known, name: figures}, indent=1))


def test_44_jpegs_of_1500_scans_are_refused_and_health_checks_stay_quick(gateway: str) -> None:
    # The hostile pass's file: 2048², one scan repeated 1,500 times, 49 KB, 3-4 s to decode.
    hostile = many_scans_jpeg_b64(2048, 1500)
    answers, waits, seconds = posted_while_probing(gateway, [(spec(hostile, 2048), ALICE)] * 44)
    # Each 65 KB of body: refused by its scan count, or (past alice's four uploads in flight)
    # before its body is read.
    kinds = Counter(r.json()["detail"][0]["type"] for r in answers)
    assert set(kinds) <= {"image_too_costly", "too_many_uploads"}, kinds
    assert kinds["image_too_costly"] > 0
    for response in answers:
        [item] = response.json()["detail"]
        if item["type"] == "image_too_costly":
            assert (response.status_code, item["loc"]) == (422, ["body", "init_image"])
        else:
            assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    assert max(waits) < 0.5, sorted(waits)[-5:]
    record("hostile_jpegs", {
        "requests": 44, "seconds": round(seconds, 2), "refused": dict(kinds),
        "healthz_max_s": round(max(waits), 4),
    })  # fmt: skip


def test_decoding_at_the_limit_queues_for_the_cores_and_health_checks_do_not(
    gateway: str,
) -> None:
    # 100 scans, the limit: admitted, and a quarter second of CPU each to decode at 2048². 44 at
    # once are 10 s of decoding; health checks are answered on the event loop meanwhile, not
    # behind the request threads (which wait for a decode slot). The bound is loose (a busy
    # 2-core CI machine), the figures go to .artifacts/tenants.json.
    costly = many_scans_jpeg_b64(2048, 90)
    answers, waits, seconds = posted_while_probing(gateway, [(spec(costly, 2048), BOB)] * 44)
    assert Counter(r.status_code for r in answers) == {202: 44}
    assert statistics.median(waits) < 0.1, sorted(waits)
    record("decodes_at_the_limit", {
        "requests": 44, "seconds": round(seconds, 2),
        "healthz_median_s": round(statistics.median(waits), 4),
        "healthz_max_s": round(max(waits), 4),
    })  # fmt: skip


def start_upload(url: str, key: str, body: bytes) -> socket.socket:
    """A request whose body is still arriving: its headers and first bytes sent, the rest held
    back (as a slow client's upload is)."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    head = (
        f"POST /jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body[:100])
    return connection


def finish_upload(connection: socket.socket, body: bytes) -> int:
    connection.sendall(body[100:])
    with connection, connection.makefile("rb") as answer:
        return int(answer.readline().split()[1])


def test_a_key_with_many_uploads_in_flight_waits_and_other_keys_do_not(gateway: str) -> None:
    body = json.dumps(spec(noise_png_b64(256), 256)).encode()
    assert len(body) > LARGE_BODY_BYTES
    headers = {"Content-Type": "application/json"}
    held = [start_upload(gateway, ALICE, body) for _ in range(4)]  # alice's limit here
    with httpx.Client(base_url=gateway, timeout=30) as http:
        deadline = time.monotonic() + 10
        while True:  # until the gateway has taken in all four
            fifth = http.post("/jobs", content=body, headers=bearer(ALICE) | headers)
            if fifth.status_code != 202 or time.monotonic() > deadline:
                break
        assert fifth.status_code == 429, fifth.text
        assert fifth.headers["Retry-After"] == "1"
        assert fifth.json()["detail"][0]["type"] == "too_many_uploads"
        small = http.post("/jobs", json=spec(png_b64(64, 64), 64), headers=bearer(ALICE))
        assert small.status_code == 202, small.text  # a few KB: not an upload that counts
        bobs = http.post("/jobs", content=body, headers=bearer(BOB) | headers)
        assert bobs.status_code == 202, bobs.text
        assert [finish_upload(c, body) for c in held] == [202] * 4
        again = http.post("/jobs", content=body, headers=bearer(ALICE) | headers)
        assert again.status_code == 202, again.text  # the slots were given back


@pytest.fixture(scope="module")
def keyed_stack(
    redis_server: RedisServer, registry_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway with keys and one worker that runs one job at a time (no batching: one job's
    time is then what a turn costs)."""
    root = tmp_path_factory.mktemp("turns")
    port = free_port()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/6",
        "IMAGEGEN_REGISTRY": str(registry_file),
        "IMAGEGEN_API_KEYS": json.dumps({"alice": digest(ALICE), "bob": digest(BOB)}),
        "IMAGEGEN_MAX_BATCH_IMAGES": "1",
        "IMAGEGEN_TORCH_THREADS": "1",
        "IMAGEGEN_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "IMAGEGEN_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on loopback
        "IMAGEGEN_SWEEP_INTERVAL_S": "0.5",
    }
    redis = Redis.from_url(env["REDIS_URL"])
    worker = start_worker(env, root / "worker.log")
    # Two webhook workers, as make run and compose start them.
    hooks = [start_webhook_worker(env, root / f"webhooks-{i}.log") for i in (0, 1)]
    gateway = start_gateway(env, port, root / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        for hook in hooks:
            wait_for_rq_worker(redis, hook, WEBHOOK_QUEUE)
        wait_for_gateway(url, gateway)
        wait_for_workers(redis, [worker])
        yield url
    finally:
        for process in (gateway, worker, *hooks):
            stop(process)


def test_a_key_with_a_backlog_does_not_delay_another_keys_next_job(keyed_stack: str) -> None:
    one = {
        "prompt": "a turn",
        "width": 64,
        "height": 64,
        "stages": [{"model": "demo-sd15", "steps": 30}],
    }
    with httpx.Client(base_url=keyed_stack, timeout=30) as http:
        alices = [
            http.post("/jobs", json=one, headers=bearer(ALICE)).json()["id"] for _ in range(20)
        ]
        deadline = time.monotonic() + 60
        while http.get(f"/jobs/{alices[0]}", headers=bearer(ALICE)).json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        submitted = datetime.now(UTC)
        bobs = http.post("/jobs", json=one, headers=bearer(BOB)).json()["id"]
        bob = wait_final_as(http, bobs, BOB)
        alice = [wait_final_as(http, job_id, ALICE, timeout=180) for job_id in alices]
    assert bob["status"] == "succeeded", bob["error"]

    def started(envelope: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(envelope["started_at"])

    # Bob's job is the next the worker starts: none of alice's starts between his submission and
    # his job's start, but for one the worker may have taken while his was being admitted.
    # First come, first served, all 20 would.
    between = [a for a in alice if submitted < started(a) < started(bob)]
    assert len(between) <= 1, len(between)
    job_seconds = statistics.median(
        (datetime.fromisoformat(a["finished_at"]) - started(a)).total_seconds() for a in alice
    )
    record("fair_turns", {
        "alice_queued": 20, "alice_job_s": round(job_seconds, 3),
        "bob_started_after_s": round((started(bob) - submitted).total_seconds(), 3),
        "alice_jobs_started_between": len(between),
    })  # fmt: skip


def wait_final_as(http: httpx.Client, job_id: str, key: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        envelope: dict[str, Any] = http.get(f"/jobs/{job_id}", headers=bearer(key)).json()
        if envelope["status"] in ("succeeded", "failed", "canceled"):
            return envelope
        assert time.monotonic() < deadline, envelope
        time.sleep(0.02)


def test_a_slow_receiver_delays_only_its_own_webhooks(keyed_stack: str) -> None:
    # Alice's receiver holds every POST 4 s (the hostile pass's dribbled its headers for the
    # whole 10 s deadline); bob's answers at once.
    slow, fast = Receiver(hold_s=4), Receiver()
    one = {
        "prompt": "a hook",
        "width": 64,
        "height": 64,
        "stages": [{"model": "demo-sd15", "steps": 2}],
    }
    try:
        with httpx.Client(base_url=keyed_stack, timeout=30) as http:
            alices = [
                http.post("/jobs", json={**one, "webhook_url": slow.url}, headers=bearer(ALICE))
                for _ in range(6)
            ]
            assert all(r.status_code == 202 for r in alices)
            slow.wait(1)  # the first of alice's is being delivered
            bobs = http.post("/jobs", json={**one, "webhook_url": fast.url}, headers=bearer(BOB))
            bob = wait_final_as(http, bobs.json()["id"], BOB)
            [delivery] = fast.wait(1, timeout=30)
        ended = datetime.fromisoformat(bob["finished_at"]).timestamp()
        delay = delivery["at"] - ended
        # One webhook worker is held by alice's receiver (one attempt in flight per receiver);
        # the other delivers bob's. First come, first served it would wait 6 × 4 s.
        assert delay < 3.0, delay
        alice_received = len(slow.received)
    finally:
        slow.close()
        fast.close()
    record("webhook_isolation", {
        "alice_owed": 6, "alice_receiver_hold_s": 4, "bob_delivered_after_s": round(delay, 3),
        "alice_delivered_by_then": alice_received,
    })  # fmt: skip


def test_a_face_that_waits_for_its_job_holds_no_upload_slot_while_it_waits(gateway: str) -> None:
    # A1111's img2img answers when its job ends (here never: no worker). Once admitted, its body
    # is checked and stored: five of them waiting leave alice's four upload slots free.
    picture = noise_png_b64(256)
    a1111 = {"init_images": [picture], "prompt": "waits", "width": 256, "height": 256, "steps": 2}

    def waiting_img2img() -> None:
        client = httpx.Client(base_url=gateway, timeout=httpx.Timeout(30, read=3))
        with client as http, contextlib.suppress(httpx.ReadTimeout):
            http.post("/sdapi/v1/img2img", json=a1111, headers=bearer(ALICE))

    with ThreadPoolExecutor(max_workers=5) as pool:
        waits = [pool.submit(waiting_img2img) for _ in range(5)]
        time.sleep(1.5)  # admitted by now, and waiting
        with httpx.Client(base_url=gateway, timeout=30) as http:
            body = json.dumps(spec(picture, 256)).encode()
            assert len(body) > LARGE_BODY_BYTES
            headers = bearer(ALICE) | {"Content-Type": "application/json"}
            native = http.post("/jobs", content=body, headers=headers)
        assert native.status_code == 202, native.text
        for waited in waits:
            waited.result()
