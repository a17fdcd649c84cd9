"""Hostile input schemathesis will not think of: each is a 4xx, nothing is queued, the service
stays up. Runs against the gateway process of the fault stack."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from jobs.redis_keys import OUTSTANDING
from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("faults")]

BASE = {"prompt": "hostile", "width": 64, "height": 64, "stages": [{"model": "demo-sd15"}]}


def jpeg_claiming(width: int, height: int) -> str:
    """A small JPEG whose frame header declares `width` x `height`."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, format="JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return base64.b64encode(bytes(data)).decode()


def png_bomb() -> str:
    width = height = 30000
    row = b"\x00" * (width + 1)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(200)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    )
    return base64.b64encode(png + chunk(b"IDAT", data) + chunk(b"IEND", b"")).decode()


def nested(depth: int) -> str:
    return '{"prompt": ' + "[" * depth + "]" * depth + "}"


CASES: dict[str, tuple[str, str, Any]] = {
    # name: (method, path, body as JSON-able object, or raw text for the request content)
    "decompression-bomb PNG": ("POST", "/jobs", {**BASE, "init_image": png_bomb()}),
    "JPEG declaring 60000x60000": (
        "POST",
        "/jobs",
        {**BASE, "init_image": jpeg_claiming(60000, 60000)},
    ),
    "base64 with garbage": ("POST", "/jobs", {**BASE, "init_image": "iVBORw0KGgo=" + "%$#!" * 10}),
    "deeply nested JSON": ("POST", "/jobs", nested(100_000)),
    "huge JSON body": ("POST", "/jobs", json.dumps({**BASE, "negative_prompt": "x" * 60_000_000})),
    "10 MB prompt": ("POST", "/jobs", {**BASE, "prompt": "p" * 10_000_000}),
    "control characters in the prompt": ("POST", "/jobs", {**BASE, "prompt": "a\x00b\x1b[31mred"}),
    "control characters in a stage prompt": (
        "POST",
        "/jobs",
        {**BASE, "stages": [{"model": "demo-sd15", "prompt": "\x07bell"}]},
    ),
    "negative seed": ("POST", "/jobs", {**BASE, "seed": -5}),
    "seed too large": ("POST", "/jobs", {**BASE, "seed": 2**70}),
    "NaN guidance": (
        "POST",
        "/jobs",
        '{"prompt": "x", "width": 64, "height": 64, '
        '"stages": [{"model": "demo-sd15", "guidance_scale": NaN}]}',
    ),
    "Infinity strength": (
        "POST",
        "/jobs",
        '{"prompt": "x", "width": 64, "height": 64, '
        '"strength": Infinity, "stages": [{"model": "demo-sd15"}]}',
    ),
    "model name like a path": (
        "POST",
        "/jobs",
        {**BASE, "stages": [{"model": "../../etc/passwd"}]},
    ),
    "model name with a NUL": ("POST", "/jobs", {**BASE, "stages": [{"model": "demo-sd15\x00"}]}),
    "not JSON at all": ("POST", "/jobs", "\xff\xfe not json"),
    "a JSON array": ("POST", "/jobs", "[1, 2, 3]"),
    "job id with path characters": ("GET", "/jobs/..%2F..%2Fetc%2Fpasswd", None),
    "job id with encoded dots": ("GET", "/jobs/%2e%2e%2f%2e%2e%2fmetrics", None),
    "image index negative": ("GET", "/jobs/00000000-0000-4000-8000-000000000000/images/-1", None),
    "cancel a path": ("POST", "/jobs/%2e%2e/cancel", None),
}


@pytest.fixture(scope="module")
def http(fault_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fault_stack.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_is_a_4xx_and_queues_nothing(
    case: str, http: httpx.Client, fault_stack: Stack
) -> None:
    method, path, body = CASES[case]
    redis = fault_stack.redis
    before = (
        redis.llen("rq:queue:imagegen.default"),
        redis.zcard(OUTSTANDING),
        len(list(redis.scan_iter("imagegen:job:*"))),
    )
    if body is None:
        response = http.request(method, path)
    elif isinstance(body, str):
        response = http.request(
            method,
            path,
            content=body.encode("utf-8", "surrogateescape"),
            headers={"Content-Type": "application/json"},
        )
    else:
        response = http.request(method, path, json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    assert len(response.content) < 10_000, "error responses must not echo huge input"
    after = (
        redis.llen("rq:queue:imagegen.default"),
        redis.zcard(OUTSTANDING),
        len(list(redis.scan_iter("imagegen:job:*"))),
    )
    assert after == before
    assert http.get("/healthz").status_code == 200
