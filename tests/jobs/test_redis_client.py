"""Reaching Redis by URL or through Sentinel, and waiting for replicas: on real redis-servers
(a primary, its replica and one sentinel, on loopback). The failover itself:
tests/stack/reliability/test_failover.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from devstack.redis_server import RedisServer
from devstack.sentinel import SentinelServer
from jobs.redis_client import (
    RedisTarget,
    Replication,
    connect,
    connect_async,
    parse_sentinels,
    replicated,
)

PASSWORD = "redis-client-test"


@dataclass
class Pair:
    primary: RedisServer
    replica: RedisServer
    sentinel: SentinelServer

    def target(self, url: str | None = None) -> RedisTarget:
        # The URL's host is not the primary's: under Sentinel only its password and db count.
        url = url or f"redis://:{PASSWORD}@192.0.2.1:1/3"
        return RedisTarget(url, (("127.0.0.1", self.sentinel.port),), "imagegen")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("sentinel")
    primary = RedisServer(root / "primary", password=PASSWORD).start()
    replica = RedisServer(root / "replica", password=PASSWORD, replica_of=primary).start()
    replica.wait_in_sync()
    sentinel = SentinelServer(root / "sentinel", primary, quorum=1).start()
    yield Pair(primary, replica, sentinel)
    sentinel.stop()
    replica.stop()
    primary.stop()


def test_sentinel_addresses_parse_and_a_bad_one_is_named() -> None:
    assert parse_sentinels("10.0.0.1:26379, sentinel-b:26380,[::1]:26381") == (
        ("10.0.0.1", 26379),
        ("sentinel-b", 26380),
        ("::1", 26381),
    )
    with pytest.raises(ValueError, match="IMAGEGEN_REDIS_SENTINELS: 'sentinel-c' is not host:port"):
        parse_sentinels("a:1,sentinel-c")


def test_through_sentinel_a_client_writes_to_the_primary_with_the_urls_password_and_db(
    pair: Pair,
) -> None:
    client = connect(pair.target())
    client.set("through-sentinel", "yes")
    assert client.connection_pool.connection_kwargs["db"] == 3
    on_the_primary = Redis(port=pair.primary.port, password=PASSWORD, db=3)
    assert on_the_primary.get("through-sentinel") == b"yes"
    client.close()


def test_the_async_client_follows_the_sentinels_too(pair: Pair) -> None:
    async def round_trip() -> bytes | None:
        client = connect_async(pair.target(), max_connections=4, timeout=2)
        try:
            await client.set("async-through-sentinel", "yes")
            value: bytes | None = await client.get("async-through-sentinel")
            return value
        finally:
            await client.aclose()

    assert asyncio.run(round_trip()) == b"yes"


def test_a_wrong_password_is_refused_by_the_sentinels_as_by_the_nodes(pair: Pair) -> None:
    client = connect(pair.target(f"redis://:wrong@127.0.0.1:{pair.primary.port}/0"))
    with pytest.raises((AuthenticationError, ConnectionError, ResponseError)):
        client.set("k", "v")


def test_replicated_counts_the_replica_and_replication_says_when_it_is_short(
    pair: Pair, tmp_path: Path
) -> None:
    client = connect(pair.target())
    client.set("to-replicate", "x")
    assert replicated(client, 1, 1000) == 1
    assert Replication(1, 1000).confirmed(client) is None  # enough
    assert Replication(2, 50).confirmed(client) == 1  # one of two, after 50 ms
    lone = RedisServer(tmp_path / "lone").start()  # no replica at all
    try:
        assert Replication(1, 50).confirmed(connect(RedisTarget(lone.url))) == 0
    finally:
        lone.stop()
