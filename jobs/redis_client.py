"""How every process reaches Redis: one URL, or the primary that Redis Sentinel names, and how a
write is made to last through a failover (`replicated`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.asyncio import BlockingConnectionPool as AsyncBlockingPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

from jobs.redis_keys import REPLICATION_TICK_KEY


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: `url` alone, or, with `sentinels`, the primary they name `master`; the
    URL then gives only the password, database and TLS options (its host is not used). The
    sentinels take the same password and TLS options as the data nodes."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = "imagegen"


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 in brackets: `[::1]:26379`)."""
    sentinels = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"IMAGEGEN_REDIS_SENTINELS: {item.strip()!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    return tuple(sentinels)


def _node_options(url: str) -> dict[str, Any]:
    """The URL's connection options, less its address: what each node (and sentinel) takes."""
    options = dict(parse_url(url))  # type: ignore[no-untyped-call]
    for address in ("host", "port", "path"):
        options.pop(address, None)
    if issubclass(options.pop("connection_class", object), SSLConnection):
        options["ssl"] = True
    return options


def _sentinel_options(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "db"}


def connect(target: RedisTarget, **options: Any) -> Redis:
    """A client of the primary. Under Sentinel each new connection asks the sentinels where the
    primary is, and a connection to a node that has become a replica is dropped, so a failover
    looks like a short outage (what `jobs.outage` waits out)."""
    if not target.sentinels:
        return Redis.from_url(target.url, **options)
    node = _node_options(target.url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={**_sentinel_options(node), "socket_timeout": 2},
        **node,
    )
    client: Redis = sentinel.master_for(target.master, **options)  # type: ignore[no-untyped-call]
    return client


class _BlockingSentinelPool(AsyncSentinelPool, AsyncBlockingPool):
    """The primary's connections, waiting for a free one rather than failing a burst."""


class _SentinelClient(AsyncRedis):
    """Closes its sentinels' connections with its own (asyncio ones are not left to GC)."""

    sentinels: Sequence[AsyncRedis] = ()

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.sentinels:
            await sentinel.aclose()


def connect_async(target: RedisTarget, max_connections: int, timeout: float) -> AsyncRedis:
    """The gateway's asyncio client (event streams): at most `max_connections`, each request
    waiting up to `timeout` s for a free one."""
    if not target.sentinels:
        pool = AsyncBlockingPool.from_url(
            target.url, max_connections=max_connections, timeout=timeout
        )
        return AsyncRedis(connection_pool=pool)
    node = _node_options(target.url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={**_sentinel_options(node), "socket_timeout": 2},
        **node,
    )
    client: _SentinelClient = sentinel.master_for(
        target.master,
        redis_class=_SentinelClient,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=max_connections,
        timeout=timeout,
    )
    client.sentinels = sentinel.sentinels
    return client


def replicated(redis: Redis, replicas: int, timeout_ms: int) -> int:
    """How many replicas hold every write this primary took so far, waiting up to `timeout_ms`
    for `replicas` of them (Redis' WAIT). A connection error means the primary went away: the
    caller cannot know whether its write survived."""
    # WAIT counts the replicas that have every write up to the *connection's* last one, and the
    # pool hands out any connection: so one write first, on WAIT's connection. The replication
    # stream is ordered: a replica that has the tick has every write the primary took before it.
    with redis.pipeline(transaction=False) as pipe:
        pipe.incr(REPLICATION_TICK_KEY)
        pipe.wait(replicas, timeout_ms)
        acknowledged: int = pipe.execute()[1]
    return acknowledged


@dataclass(frozen=True)
class Replication:
    """A write that must outlive its primary waits for `replicas` replicas to hold it, up to
    `timeout_ms` (IMAGEGEN_REDIS_MIN_REPLICAS, IMAGEGEN_REDIS_REPLICA_WAIT_MS)."""

    replicas: int
    timeout_ms: int

    def confirmed(self, redis: Redis) -> int | None:
        """None: enough replicas hold every write so far; else how many do."""
        acknowledged = replicated(redis, self.replicas, self.timeout_ms)
        return None if acknowledged >= self.replicas else acknowledged
