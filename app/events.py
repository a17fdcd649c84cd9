"""Server-Sent Events for one job: the envelope whenever its status or progress changes.

The worker publishes on the job's channel at every status change and progress write, so a
listener wakes at once instead of polling; the hash stays the source of truth (re-read on every
wake-up, and at least every second in case a message was missed). FastAPI's EventSourceResponse
does the framing and the keep-alive comments.

Streams share one pub/sub connection per gateway process (`JobEvents`): a pattern subscription
to every job's channel, fanned out to the streams that follow each job. A stream only borrows a
pooled connection for the moment it reads the job's hash, and at most `READS_AT_ONCE` streams
read at once (their once-a-second rechecks fall together on a busy loop), so a hundred open
streams cannot exhaust, or grow, the pool that admission and polling use (they did, when each
held a subscription). The streams one key may hold open in one gateway process are capped
(`StreamSlots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

from fastapi.sse import ServerSentEvent
from redis.asyncio import Redis
from redis.exceptions import RedisError

from contract.envelope import JobEnvelope
from jobs.redis_keys import EVENTS_PATTERN, job_id_of_channel, job_key, text
from jobs.store import envelope_from_hash

log = logging.getLogger("imagegen.gateway")

RECHECK_S = 1.0
READS_AT_ONCE = 8  # streams reading their job's hash at one moment, per gateway process
RETRY_MS = 2000  # how long a browser's EventSource waits before it reconnects


class TooManyStreams(Exception):
    def __init__(self, owner: str, cap: int) -> None:
        super().__init__(
            f"this key already follows {cap} jobs' events here; close a stream, or poll "
            "GET /jobs/{job_id}"
        )
        self.owner = owner


class StreamSlots:
    """Open streams per key, in this process."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        if self._open[owner] >= self.per_key:
            raise TooManyStreams(owner, self.per_key)
        self._open[owner] += 1
        try:
            yield
        finally:
            self._open[owner] -= 1
            if not self._open[owner]:
                del self._open[owner]


class JobEvents:
    """One pattern subscription for this process, waking the streams of each job."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._followers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._reads = asyncio.Semaphore(READS_AT_ONCE)

    async def read(self, redis: Redis, job_id: str) -> dict[bytes, bytes]:
        """The job's hash, read by a follower: a pooled connection for the moment it reads."""
        async with self._reads:
            raw: dict[bytes, bytes] = await redis.hgetall(job_key(job_id))  # type: ignore[assignment]
            return raw

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-events")

    async def stop(self) -> None:
        """Cancel the listener; bounded, so that a Redis that hangs cannot hang shut-down."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    @contextlib.contextmanager
    def follow(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job's channel says something changed."""
        changed = asyncio.Event()
        self._followers[job_id].add(changed)
        try:
            yield changed
        finally:
            self._followers[job_id].discard(changed)
            if not self._followers[job_id]:
                del self._followers[job_id]

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(EVENTS_PATTERN)
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        self._wake(job_id_of_channel(text(message["channel"])))
            except RedisError:
                log.warning("job events: Redis lost; streams poll until it is back")
                await asyncio.sleep(1)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, job_id: str) -> None:
        for changed in self._followers.get(job_id, ()):
            changed.set()


async def job_events(
    redis: Redis, hub: JobEvents, job_id: str, last_event_id: int = 0
) -> AsyncIterator[ServerSentEvent]:
    """Events numbered on from `last_event_id` (a reconnecting client sends it): a resumed stream
    starts with the current envelope, so nothing a client missed is lost."""
    # Followed before the first read: a change after it is always heard.
    with hub.follow(job_id) as changed:
        last = None
        event_id = last_event_id
        while True:
            changed.clear()
            raw = await hub.read(redis, job_id)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), RECHECK_S)


async def wait_for_end(redis: Redis, hub: JobEvents, job_id: str, wait_s: float) -> JobEnvelope:
    """The job's envelope once it has ended, or as it is after `wait_s` (the faces that answer
    with the pictures, A1111's and OpenAI's, wait so; the janitor ends a job left past its
    deadline)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    with hub.follow(job_id) as changed:
        while True:
            changed.clear()
            raw = await hub.read(redis, job_id)
            envelope = envelope_from_hash(job_id, raw)
            if not raw or envelope.status.is_final:
                return envelope
            if asyncio.get_running_loop().time() > deadline:
                return envelope
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), RECHECK_S)
