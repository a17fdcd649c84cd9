"""Server-Sent Events for one job: the envelope whenever its status or progress changes.

The worker publishes on the job's channel at every status change and progress write, so a
listener wakes at once instead of polling; the hash stays the source of truth (re-read on every
wake-up, and at least every second in case a message was missed). FastAPI's EventSourceResponse
does the framing and the keep-alive comments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.sse import ServerSentEvent
from redis.asyncio import Redis

from jobs.redis_keys import events_channel, job_key
from jobs.store import envelope_from_hash

RECHECK_S = 1.0


async def job_events(redis: Redis, job_id: str) -> AsyncIterator[ServerSentEvent]:
    pubsub = redis.pubsub()
    # Subscribe before the first read: a change after it is always heard.
    await pubsub.subscribe(events_channel(job_id))
    try:
        last = None
        while True:
            raw: dict[bytes, bytes] = await redis.hgetall(job_key(job_id))  # type: ignore[assignment]
            if not raw:  # expired or deleted while we watched
                yield ServerSentEvent(event="gone", raw_data="{}")
                return
            envelope = envelope_from_hash(job_id, raw)
            marker = (envelope.status, envelope.progress)
            if marker != last:
                last = marker
                yield ServerSentEvent(event="envelope", raw_data=envelope.model_dump_json())
                if envelope.status.is_final:
                    return
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_S)
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
