"""Admission's high-water mark on Redis memory.

With `maxmemory-policy noeviction` (docker-compose.yml), Redis refuses every write at its limit,
the running jobs' writes included: their pictures, their progress, their endings. Admission stops
taking jobs before that, at a fraction of `maxmemory` (IMAGEGEN_ADMIT_BELOW_MEMORY_FRACTION,
0.9), so that what is already running keeps room to finish. Redis's figures are read at most
once a second: admission is the hot path.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.exceptions import OutOfMemoryError


class StoreNearlyFull(OutOfMemoryError):
    """Redis is past admission's high-water mark: answered as `store_full` (app.errors)."""


class StoreRoom:
    def __init__(self, redis: Redis, fraction: float, recheck_s: float = 1.0) -> None:
        self.redis = redis
        self.fraction = fraction
        self.recheck_s = recheck_s
        self._read_at = -float("inf")
        self._used = 0
        self._limit = 0

    def check(self) -> None:
        """Raise StoreNearlyFull if Redis holds more than the fraction of its maxmemory (no
        maxmemory: no mark)."""
        now = time.monotonic()
        if now - self._read_at >= self.recheck_s:
            memory = self.redis.info("memory")
            self._used, self._limit = int(memory["used_memory"]), int(memory["maxmemory"])
            self._read_at = now
        if self._limit and self._used >= self.fraction * self._limit:
            raise StoreNearlyFull(
                f"Redis holds {self._used} of its {self._limit} bytes, past admission's mark "
                f"({self.fraction:.0%}): running jobs keep the rest to finish"
            )
