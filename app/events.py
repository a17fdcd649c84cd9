"""Server-Sent Events for one job: the envelope whenever its status or progress changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from contract.job_store import envelope_from_hash, job_key

POLL_S = 0.1
KEEPALIVE_S = 15.0


async def job_events(redis: Redis, job_id: str) -> AsyncIterator[str]:
    last = None
    last_sent = time.monotonic()
    while True:
        raw: dict[bytes, bytes] = await redis.hgetall(job_key(job_id))  # type: ignore[assignment]
        if not raw:  # expired or deleted while we watched
            yield "event: gone\ndata: {}\n\n"
            return
        envelope = envelope_from_hash(job_id, raw)
        marker = (envelope.status, envelope.progress)
        if marker != last:
            last, last_sent = marker, time.monotonic()
            yield f"event: envelope\ndata: {envelope.model_dump_json()}\n\n"
            if envelope.status.is_final:
                return
        elif time.monotonic() - last_sent > KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
