"""Who runs a job's segment: one worker at a time, for as long as it lives.

A worker normally runs a segment because RQ handed it the segment's RQ job. A worker that
batches (`workers.segments.batching`) also runs queued segments whose RQ jobs stay in the queue:
if that worker dies, those RQ jobs are still there, and whichever worker takes one runs the
segment again. While it lives, the batching worker holds each segment's claim, a key with a short
expiry that it refreshes from a thread; a worker handed an RQ job whose segment another live
worker holds waits until the claim is released (then finds the job finished, and does nothing)
or expires (its holder died: it runs the segment). Claims are taken with SET NX, so of two
workers only one ever runs a segment at a time.
"""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis

from jobs.redis_keys import claim_key

log = logging.getLogger("imagegen.jobs")

# Delete or extend a claim only if this worker still holds it.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class Claims:
    def __init__(self, redis: Redis, worker: str, ttl_s: float) -> None:
        self.redis = redis
        self.worker = worker
        self.ttl_ms = int(ttl_s * 1000)
        self.held: set[str] = set()
        # Held for a job whose pictures a thread of this worker is still storing
        # (workers.segments.finisher): this worker waits for those like any other's, and only
        # `settle` releases them.
        self.lent: set[str] = set()
        self._lock = threading.Lock()
        self._refresher: threading.Thread | None = None

    def take(self, job_id: str, segment: int) -> bool:
        """Claim the segment unless another worker holds it."""
        key = claim_key(job_id, segment)
        if self.redis.set(key, self.worker, nx=True, px=self.ttl_ms):
            with self._lock:
                self.held.add(key)
            self._ensure_refresher()
            return True
        with self._lock:
            if key in self.lent:
                return False
        return self.holder(job_id, segment) == self.worker

    def holder(self, job_id: str, segment: int) -> str | None:
        raw = self.redis.get(claim_key(job_id, segment))
        return raw.decode() if isinstance(raw, bytes) else raw

    def wait_and_take(self, job_id: str, segment: int, poll_s: float = 0.25) -> None:
        """Take the claim, waiting while another live worker holds it."""
        while not self.take(job_id, segment):
            time.sleep(poll_s)

    def release(self, job_id: str, segment: int) -> None:
        """Release the claim, unless it is lent (then `settle` does, once the job is stored)."""
        key = claim_key(job_id, segment)
        with self._lock:
            if key in self.lent:
                return
            self.held.discard(key)
        self.redis.eval(_RELEASE, 1, key, self.worker)

    def lend(self, job_id: str, segment: int) -> None:
        """Keep the claim past the job's run, for the thread that stores its pictures."""
        with self._lock:
            self.lent.add(claim_key(job_id, segment))

    def settle(self, job_id: str, segment: int) -> None:
        """The lent claim's job is stored: release it."""
        with self._lock:
            self.lent.discard(claim_key(job_id, segment))
        self.release(job_id, segment)

    def _ensure_refresher(self) -> None:
        if self._refresher is None or not self._refresher.is_alive():
            self._refresher = threading.Thread(target=self._refresh, daemon=True, name="claims")
            self._refresher.start()

    def _refresh(self) -> None:
        while True:
            time.sleep(self.ttl_ms / 3000)
            with self._lock:
                keys = list(self.held)
            for key in keys:
                try:
                    self.redis.eval(_EXTEND, 1, key, self.worker, self.ttl_ms)
                except Exception:  # Redis away for a moment: the next round tries again
                    log.warning("claim %s not refreshed", key, exc_info=True)
