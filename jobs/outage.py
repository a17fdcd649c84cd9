"""Redis going away under a worker (a restart, or its memory limit): wait, never lose the job."""

from __future__ import annotations

import logging
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


def through_outage(write: Callable[[], T]) -> T:
    """Run a write that is safe to repeat, waiting out a Redis restart, so that a finished job
    is not lost."""
    return _WRITE_RETRY.call_with_retry(
        write, lambda error: log.warning("Redis unavailable (%s); retrying the write", error)
    )
