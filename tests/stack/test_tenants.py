"""One key cannot starve the others of the gateway: pictures that cost CPU to decode, and many
large bodies at once, leave health checks answered and other keys served.

A gateway process of its own (real uvicorn, API keys for alice and bob, a 2048² pixel budget)
on the session's private Redis, no worker: admitted jobs stay queued.
"""

from __future__ import annotations

import base64
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
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.keys import digest
from app.uploads import LARGE_BODY_BYTES
from devstack.processes import start_gateway, stop, wait_for_gateway
from devstack.redis_server import RedisServer, free_port
from jobs.settings import REPO_ROOT
from tests.helpers import many_scans_jpeg_b64, png_b64

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

ALICE, BOB = "ig_alice_tenant", "ig_bob_tenant"
ARTIFACTS = REPO_ROOT / ".artifacts"


def spec(init_image: str, side: int) -> dict[str, object]:
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


def test_costly_jpegs_leave_health_checks_answered(gateway: str) -> None:
    # The hostile pass's file: 2048², one scan repeated 1,500 times, 49 KB, 3-4 s to decode.
    hostile = many_scans_jpeg_b64(2048, 1500)
    # At the limit (100 scans): admitted, and a quarter second of CPU each to decode.
    costly = many_scans_jpeg_b64(2048, 90)
    waits: list[float] = []
    stop_probing = threading.Event()
    prober = threading.Thread(target=probe_health, args=(gateway, stop_probing, waits))
    prober.start()

    def post(body: dict[str, object], key: str) -> httpx.Response:
        with httpx.Client(base_url=gateway, timeout=120) as http:
            return http.post("/jobs", json=body, headers=bearer(key))

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=88) as pool:
            refused = [pool.submit(post, spec(hostile, 2048), ALICE) for _ in range(44)]
            admitted = [pool.submit(post, spec(costly, 2048), BOB) for _ in range(44)]
            refusals = [f.result() for f in refused]
            admissions = [f.result() for f in admitted]
    finally:
        stop_probing.set()
        prober.join()
    elapsed = time.perf_counter() - started
    # Each 65 KB of body: refused by its scan count, or (past alice's four uploads in flight)
    # before its body is read.
    kinds = Counter(r.json()["detail"][0]["type"] for r in refusals)
    assert set(kinds) <= {"image_too_costly", "too_many_uploads"}, kinds
    assert kinds["image_too_costly"] > 0
    for response in refusals:
        [item] = response.json()["detail"]
        if item["type"] == "image_too_costly":
            assert (response.status_code, item["loc"]) == (422, ["body", "init_image"])
        else:
            assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    assert Counter(r.status_code for r in admissions) == {202: 44}
    assert len(waits) > 10
    assert max(waits) < 0.5, sorted(waits)[-5:]
    ARTIFACTS.mkdir(exist_ok=True)
    figures = {
        "requests": 88,
        "seconds": round(elapsed, 2),
        "healthz_max_s": round(max(waits), 4),
        "healthz_median_s": round(statistics.median(waits), 4),
        "refused": dict(kinds),
    }
    (ARTIFACTS / "decode-budget.json").write_text(json.dumps(figures))


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
