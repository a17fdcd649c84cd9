"""Admission's high-water mark on a real Redis's memory figures: under the mark jobs are taken,
past it refused, no maxmemory no mark; read at most once per interval."""

from __future__ import annotations

import pytest
from redis import Redis

from jobs.room import StoreNearlyFull, StoreRoom


def limit_at(redis: Redis, share: float) -> None:
    """maxmemory set so that what the server holds now is `share` of it."""
    used = int(redis.info("memory")["used_memory"])
    redis.config_set("maxmemory", int(used / share))


@pytest.fixture
def limited(redis: Redis) -> Redis:
    yield redis
    redis.config_set("maxmemory", 0)  # the private server's own setting: none


def test_admission_stops_past_the_mark_and_not_before(limited: Redis) -> None:
    limit_at(limited, 0.5)
    StoreRoom(limited, 0.9, recheck_s=0).check()  # half full: room
    limit_at(limited, 0.95)
    with pytest.raises(StoreNearlyFull, match=r"past admission's mark \(90%\)"):
        StoreRoom(limited, 0.9, recheck_s=0).check()


def test_no_maxmemory_is_no_mark(limited: Redis) -> None:
    limited.config_set("maxmemory", 0)
    StoreRoom(limited, 0.01, recheck_s=0).check()


def test_the_figures_are_read_once_per_interval(limited: Redis) -> None:
    room = StoreRoom(limited, 0.9, recheck_s=3600)
    limit_at(limited, 0.5)
    room.check()
    limit_at(limited, 0.95)
    room.check()  # the last reading holds for the interval
    room.recheck_s = 0
    with pytest.raises(StoreNearlyFull):
        room.check()
