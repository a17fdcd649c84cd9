"""Key names: one place, distinct per job, segment and owner."""

from __future__ import annotations

from jobs import redis_keys as keys


def test_segment_zero_keeps_the_job_id_and_later_ones_are_suffixed() -> None:
    assert keys.rq_job_id("abc", 0) == "abc"
    assert keys.rq_job_id("abc", 2) == "abc-s2"


def test_pool_queues_and_owner_sets_are_named_apart() -> None:
    assert keys.queue_name("flux") == "imagegen.flux"
    assert keys.rq_queue_key("flux") == "rq:queue:imagegen.flux"
    assert keys.outstanding_key("alice") != keys.outstanding_key("bob")
    job_keys = {
        keys.job_key("j"),
        keys.image_key("j", 0),
        keys.cancel_key("j"),
        keys.events_channel("j"),
        keys.init_image_key("j"),
        keys.handoff_key("j", 1, 0),
    }
    assert len(job_keys) == 6
    assert all(k.startswith(f"{keys.PREFIX}:job:j") for k in job_keys)
