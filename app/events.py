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
RETRY_MS = 2000  # how long a browser's EventSource waits before it reconnects


async def job_events(
    redis: Redis, job_id: str, last_event_id: int = 0
) -> AsyncIterator[ServerSentEvent]:
    """Events numbered on from `last_event_id` (a reconnecting client sends it): a resumed stream
    starts with the current envelope, so nothing a client missed is lost."""
    pubsub = redis.pubsub()
    # Subscribe before the first read: a change after it is always heard.
    await pubsub.subscribe(events_channel(job_id))
    try:
        last = None
        event_id = last_event_id
        while True:
            raw: dict[bytes, bytes] = await redis.hgetall(job_key(job_id))  # type: ignore[assignment]
            if not raw:  # expired or deleted while we watched
                yield ServerSentEvent(event="gone", raw_data="{}", id=str(event_id + 1))
                return
            envelope = envelope_from_hash(job_id, raw)
            marker = (envelope.status, envelope.progress)
            if marker != last:
                last, event_id = marker, event_id + 1
                yield ServerSentEvent(
                    event="envelope",
                    raw_data=envelope.model_dump_json(),
                    id=str(event_id),
                    retry=RETRY_MS if event_id == last_event_id + 1 else None,
                )
                if envelope.status.is_final:
                    return
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_S)
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
