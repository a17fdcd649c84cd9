"""Server-Sent Events for one job: the envelope whenever its status or progress changes.

The worker publishes on the job's channel at every status change and progress write, so a
listener wakes at once instead of polling; the hash stays the source of truth (re-read on every
wake-up, and at least every second in case a message was missed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from contract.job_store import envelope_from_hash
from contract.redis_layout import events_channel, job_key

RECHECK_S = 1.0
KEEPALIVE_S = 15.0


async def job_events(redis: Redis, job_id: str) -> AsyncIterator[str]:
    pubsub = redis.pubsub()
    # Subscribe before the first read: a change after it is always heard.
    await pubsub.subscribe(events_channel(job_id))
    try:
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
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_S)
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
