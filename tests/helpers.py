"""Small helpers the tests share."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from redis import Redis
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from contract.registry import ModelRegistry
from jobs.queues import SERIALIZER, pool_queue
from jobs.redis_keys import job_key, queue_name

FINAL = {"succeeded", "failed", "canceled"}


def wait_final(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        envelope: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if envelope["status"] in FINAL:
            return envelope
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {envelope}")


def submit_and_wait(
    client: httpx.Client, spec: dict[str, Any], timeout: float = 60
) -> dict[str, Any]:
    response = client.post("/jobs", json=spec)
    assert response.status_code == 202, response.text
    return wait_final(client, response.json()["id"], timeout)


def fetch_png(client: httpx.Client, url: str) -> tuple[bytes, Image.Image]:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content), formats=["PNG"])
    image.load()
    return response.content, image


def png_b64(width: int, height: int, color: tuple[int, int, int] = (200, 80, 40)) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def queued_anything(redis: Redis) -> bool:
    """True if any RQ job or imagegen job exists in this database."""
    return bool(list(redis.scan_iter("rq:job:*"))) or bool(list(redis.scan_iter("imagegen:*")))


def abandon(redis: Redis, job_id: str, pool: str) -> None:
    """What a worker that took the job and died leaves behind: the job off its queue, RUNNING,
    and a started-registry entry nobody refreshes (planted already expired, as RQ's tests do)."""
    redis.lrem(pool_queue(redis, pool).key, 0, job_id)
    Job.fetch(job_id, connection=redis, serializer=SERIALIZER).set_status(RQStatus.STARTED)
    redis.hset(job_key(job_id), "status", "running")
    registry = StartedJobRegistry(queue_name(pool), connection=redis)
    redis.zadd(registry.key, {f"{job_id}:dead-execution": 2})


def bomb_png_b64() -> str:
    # A 20000x20000 PNG of zeros compresses to a few hundred KB but would decode to 1.2 GB.
    width = height = 20000
    row = b"\x00" + b"\x00" * width  # filter byte + one grey byte per pixel
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    )
    png += chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def many_scans_jpeg_b64(side: int, repeats: int) -> str:
    """A progressive JPEG of `side`² whose smallest scan is repeated `repeats` more times: what
    a hostile pass sent (2048², 1,500 repeats: 49 KB, 3-4 s of CPU to decode)."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 90, 60)).save(out, "JPEG", progressive=True, quality=50)
    data = out.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    scans = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data) - 2], strict=True)]
    smallest = min(scans, key=len)
    return base64.b64encode(data[:-2] + smallest * repeats + b"\xff\xd9").decode()


@contextlib.contextmanager
def dns_that_hangs(monkeypatch: pytest.MonkeyPatch, host: str) -> Iterator[None]:
    """Lookups of `host` hang (10 s at most) until the block ends; others resolve as ever. A
    stand-in: this machine's resolver is not ours to slow."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            release.wait(10)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        yield
    finally:
        release.set()


def truncated_png_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()[:60]).decode()


def registry_of(models: dict[str, dict[str, object]]) -> ModelRegistry:
    """A registry of these models only."""
    return ModelRegistry.model_validate({"models": models})
