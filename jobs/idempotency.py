"""`Idempotency-Key` on job creation: the first request with a key creates the job; a retry with
the same body gets that job back; the same key with another body is a conflict.

The claim is one `SET NX` (of concurrent duplicates exactly one creates a job) with a short TTL;
the transaction that stores the job extends it to the full TTL. So a claim whose job never
appeared (the gateway died between the two) frees the key within `claim_ttl_s`, and until then a
retry is told the first request is still in flight, not an error.

The stored form says which of the two a key is: `body:job` while claimed, `body:job:stored` once
the job was stored. A stored key whose job is gone (its results expired before the key did, as a
short IMAGEGEN_RESULT_TTL_S makes them) is free again: the retry creates a new job rather than
waiting, for the rest of the key's TTL, on a job that will never appear.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from jobs.redis_keys import idempotency_key, job_key, text

STORED = "stored"
# Take a key over only if it still holds what was read (another retry may have taken it first).
_REPLACE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) end return false"
)


class IdempotencyConflict(Exception):
    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used with a different request body; use a new key for a "
            "new job"
        )


class IdempotencyInFlight(Exception):
    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being admitted; retry shortly to get "
            "its job"
        )


@dataclass(frozen=True)
class Claim:
    redis_key: str
    body: str  # digest of the request body


@dataclass(frozen=True)
class Idempotency:
    redis: Redis
    ttl_s: int
    claim_ttl_s: int = 30
    wait_s: float = 2.0  # how long a duplicate waits for the first request to store its job

    def claim(self, owner: str, key: str, body: bytes) -> Claim:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return Claim(idempotency_key(owner, digest), hashlib.sha256(body).hexdigest())

    def take(self, claim: Claim, job_id: str) -> str | None:
        """Claim the key for `job_id` (None), or return the id of the job an earlier identical
        request created."""
        deadline = time.monotonic() + self.wait_s
        while True:
            value = f"{claim.body}:{job_id}"
            if self.redis.set(claim.redis_key, value, nx=True, ex=self.claim_ttl_s):
                return None
            raw = self.redis.get(claim.redis_key)
            if raw is None:  # the first request gave the key back (or it expired): claim again
                continue
            body, earlier, state = [*text(raw).split(":"), ""][:3]
            if body != claim.body:
                raise IdempotencyConflict()
            if self.redis.exists(job_key(earlier)):
                return earlier
            if state == STORED:  # its job was stored and has expired since: the key is free
                if self.redis.eval(_REPLACE, 1, claim.redis_key, raw, value, self.claim_ttl_s):
                    return None
                continue
            if time.monotonic() > deadline:
                raise IdempotencyInFlight()
            time.sleep(0.01)

    def confirm(self, claim: Claim, job_id: str, pipe: Pipeline) -> None:
        """In the transaction that stores the job: mark the key stored and hold it for the full
        TTL."""
        pipe.set(claim.redis_key, f"{claim.body}:{job_id}:{STORED}", ex=self.ttl_s)

    def give_back(self, claim: Claim) -> None:
        self.redis.delete(claim.redis_key)
