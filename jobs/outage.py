"""Redis going away under a worker (a restart, or its memory limit): wait, never lose the job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger("imagegen.worker")

# Redis away (a restart), or at its memory limit (noeviction refuses writes until finished jobs
# expire): either way the worker waits rather than lose the job.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, RedisOutOfMemoryError)
# Writes that are safe to repeat wait out a Redis restart (about three minutes of patience);
# a segment that lost Redis mid-run is run again (generation is deterministic), three times.
_WRITE_RETRY = Retry(
    ExponentialBackoff(cap=5.0, base=0.1), retries=40, supported_errors=REDIS_ERRORS
)
SEGMENT_RERUNS = Retry(
    ExponentialBackoff(cap=5.0, base=0.5), retries=3, supported_errors=REDIS_ERRORS
)


T = TypeVar("T")

# How long a worker waits between looks at a full Redis (it waits as long as Redis stays full).
_ROOM_POLL_S = (0.5, 5.0)


def through_outage(write: Callable[[], T]) -> T:
    """Run a write that is safe to repeat, waiting out a Redis restart, so that a finished job
    is not lost."""
    return _WRITE_RETRY.call_with_retry(write, _retrying)


def _retrying(error: Exception) -> None:
    # The type, not the text: a refused write's text quotes the command, picture bytes and all.
    log.warning("Redis unavailable or full (%s); retrying the write", type(error).__name__)


def wait_for_room(write: Callable[[], T], what: str) -> T:
    """Run a bookkeeping write (a worker's registration, its state) however long Redis stays at
    its memory limit: a worker that cannot note its own state waits for room instead of exiting,
    which under a restart policy is a crash loop, and under `make run` the end of the stack."""
    pause, longest = _ROOM_POLL_S
    warned_at = 0.0
    while True:
        try:
            return write()
        except RedisOutOfMemoryError:
            if time.monotonic() - warned_at > 30:
                log.warning("Redis is at its memory limit: %s waits for room", what)
                warned_at = time.monotonic()
            time.sleep(pause)
            pause = min(longest, pause * 2)
