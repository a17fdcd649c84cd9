"""Idempotency-Key claims: one winner, replays get its job, conflicts and in-flight requests are
told apart, and a claim whose job never appeared frees the key quickly."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from jobs.idempotency import Idempotency, IdempotencyConflict, IdempotencyInFlight
from jobs.redis_keys import job_key


def test_the_first_claim_wins_and_a_replay_gets_its_job(redis: Redis) -> None:
    keys = Idempotency(redis, ttl_s=60, wait_s=0.1)
    claim = keys.claim("alice", "k1", b"body")
    assert keys.take(claim, "job-1") is None
    redis.hset(job_key("job-1"), "status", "queued")  # the first request stored its job
    assert keys.take(keys.claim("alice", "k1", b"body"), "job-2") == "job-1"


def test_the_same_key_with_another_body_is_a_conflict(redis: Redis) -> None:
    keys = Idempotency(redis, ttl_s=60, wait_s=0.1)
    assert keys.take(keys.claim("alice", "k1", b"body"), "job-1") is None
    with pytest.raises(IdempotencyConflict):
        keys.take(keys.claim("alice", "k1", b"other body"), "job-2")


def test_keys_are_scoped_per_owner(redis: Redis) -> None:
    keys = Idempotency(redis, ttl_s=60, wait_s=0.1)
    assert keys.take(keys.claim("alice", "k1", b"body"), "job-1") is None
    assert keys.take(keys.claim("bob", "k1", b"body"), "job-2") is None


def test_a_claim_whose_job_never_appeared_is_in_flight_then_expires(redis: Redis) -> None:
    keys = Idempotency(redis, ttl_s=60, claim_ttl_s=1, wait_s=0.05)
    claim = keys.claim("alice", "k1", b"body")
    assert keys.take(claim, "job-1") is None  # ... and the gateway dies before storing it
    with pytest.raises(IdempotencyInFlight):
        keys.take(claim, "job-2")
    time.sleep(1.1)
    assert keys.take(claim, "job-3") is None  # the key is free again


def test_confirming_in_the_job_transaction_holds_the_key_for_the_full_ttl(redis: Redis) -> None:
    keys = Idempotency(redis, ttl_s=600, claim_ttl_s=30)
    claim = keys.claim("alice", "k1", b"body")
    keys.take(claim, "job-1")
    assert redis.ttl(claim.redis_key) <= 30
    with redis.pipeline() as pipe:
        pipe.multi()
        keys.confirm(claim, "job-1", pipe)
        pipe.execute()
    assert redis.ttl(claim.redis_key) > 30


def test_giving_a_claim_back_frees_the_key(redis: Redis) -> None:
    keys = Idempotency(redis, ttl_s=60, wait_s=0.1)
    claim = keys.claim("alice", "k1", b"body")
    keys.take(claim, "job-1")
    keys.give_back(claim)
    assert keys.take(keys.claim("alice", "k1", b"other body"), "job-2") is None


def test_a_key_whose_job_expired_is_free_again(redis: Redis) -> None:
    # Results kept for less time than keys (a short IMAGEGEN_RESULT_TTL_S): the job is gone, the
    # key is not. A retry must not wait on a job that will never appear.
    keys = Idempotency(redis, ttl_s=600, wait_s=5.0)
    claim = keys.claim("alice", "k1", b"body")
    assert keys.take(claim, "job-1") is None
    with redis.pipeline() as pipe:
        pipe.multi()
        pipe.hset(job_key("job-1"), "status", "succeeded")
        keys.confirm(claim, "job-1", pipe)
        pipe.execute()
    assert keys.take(claim, "job-2") == "job-1"
    redis.delete(job_key("job-1"))  # its results expired
    started = time.monotonic()
    assert keys.take(claim, "job-3") is None  # a new job, at once
    assert time.monotonic() - started < 1.0
    assert redis.ttl(claim.redis_key) <= keys.claim_ttl_s  # claimed again, not yet stored
