"""Many open event streams leave the gateway serving everyone else (a hostile pass found ~100
streams exhausting the gateway's Redis pool: every other request got 503)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devstack.processes import start_gateway, stop, wait_for_gateway
from devstack.redis_server import free_port
from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

STREAMS = 150  # redis-py's asyncio pool holds 100 connections
QUEUED = {
    "prompt": "p",
    "width": 64,
    "height": 64,
    "stages": [{"model": "demo-sd15-unserved", "steps": 2}],  # no worker: it stays queued
}


def test_streams_share_one_subscription_and_the_pool_stays_free(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    env = {**stack.env, "IMAGEGEN_MAX_STREAMS_PER_KEY": str(STREAMS + 10)}
    gateway = start_gateway(env, port, tmp_path / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(url, gateway)
        clients_before = len(stack.redis.client_list())
        asyncio.run(_follow_and_serve(url, stack, clients_before))
    finally:
        stop(gateway)


async def _follow_and_serve(url: str, stack: Stack, clients_before: int) -> None:
    limits = httpx.Limits(max_connections=STREAMS + 20)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        job_id = (await client.post("/jobs", json=QUEUED)).json()["id"]
        async with contextlib.AsyncExitStack() as open_streams:
            streams = []
            for _ in range(STREAMS):
                stream = await open_streams.enter_async_context(
                    client.stream("GET", f"/jobs/{job_id}/events")
                )
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                assert '"status":"queued"' in await _next_data(lines)
                streams.append(lines)
            # Everyone else is still served.
            for _ in range(10):
                other = (await client.post("/jobs", json=QUEUED)).json()["id"]
                assert (await client.get(f"/jobs/{other}")).status_code == 200
                assert (await client.post(f"/jobs/{other}/cancel")).status_code == 200
            # One subscription for all the streams, not one connection each.
            assert len(stack.redis.client_list()) - clients_before < 20
            # And every stream hears its job's change.
            await client.post(f"/jobs/{job_id}/cancel")
            for lines in streams:
                assert '"status":"canceled"' in await _next_data(lines)


async def _next_data(lines: AsyncIterator[str]) -> str:
    seen = []
    async with asyncio.timeout(10):
        async for line in lines:
            seen.append(line[:40])
            if line.startswith("data: "):
                return line
    raise AssertionError(f"the stream ended without another event: {seen}")
