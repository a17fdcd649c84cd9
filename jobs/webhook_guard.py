"""Where a webhook may go: public addresses only (server-side request forgery), checked on the
address that will be connected to.

A name is resolved once per attempt, every address it resolves to is checked, and the POST then
connects to the checked address itself (with the name kept for `Host` and TLS), so a DNS answer
that changes between check and connect (rebinding) cannot lead the POST to loopback. The check
also runs at admission, to refuse a bad URL with a 422 before anything is queued.

Lookups run on a few threads of their own and are waited for a bounded time: an attempt's
lookup counts against its deadline (`jobs.webhooks`), and admission waits `ADMISSION_LOOKUP_S`
at most, then admits the job (the attempt checks the address again). A name whose DNS answers
slowly, or never, holds neither a request thread nor a webhook worker past that.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket

from pydantic import AnyHttpUrl

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ADMISSION_LOOKUP_S = 2.0
# Not the event loop's default executor: `asyncio.run` waits for that one's threads at its end,
# which a lookup stuck in the resolver would hold up past the attempt's deadline.
LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dns")


def refusal(url: str, allow_private: bool) -> str | None:
    """Why `url` may not receive webhooks, or None if it may (or if its name takes longer than
    ADMISSION_LOOKUP_S to resolve: each attempt checks it again)."""
    looked_up = LOOKUPS.submit(checked_address, url, allow_private)
    try:
        return looked_up.result(timeout=ADMISSION_LOOKUP_S)[1]
    except concurrent.futures.TimeoutError:
        return None


def checked_address(url: str, allow_private: bool) -> tuple[Address | None, str | None]:
    """The address to connect to for `url`, or why there is none. Its form (http or https, with
    a host) is the spec's `WebhookUrl` type's business; this checks where it leads."""
    parts = AnyHttpUrl(url)
    assert parts.host is not None  # AnyHttpUrl requires one
    host = parts.host.strip("[]")  # an IPv6 literal keeps its brackets in the URL's host
    try:
        infos = socket.getaddrinfo(host, parts.port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return None, f"webhook_url host {host!r} does not resolve"
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not allow_private:
        for address in addresses:
            if not _public(address):
                return None, (
                    f"webhook_url resolves to {address}, a loopback, link-local or private "
                    "address; this deployment only calls public addresses"
                )
    return addresses[0], None


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (well-known and local
# use), the deprecated IPv4-compatible form (`::127.0.0.1`) and SIIT's IPv4-translated form
# (`::ffff:0:a.b.c.d`, which Python's `ipv4_mapped` does not read).
_IPV4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
# Site-local (deprecated, RFC 3879, but still routed inside some networks): Python calls it global.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global, and so is any IPv4 address it carries: Python calls `[::127.0.0.1]`, NAT64
    `[64:ff9b::7f00:1]` and 6to4 `[2002:7f00:1::1]` global, yet each can lead to loopback."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    if address in _SITE_LOCAL:
        return False
    carried = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in network for network in _IPV4_IN_LAST_32_BITS):
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(v4.is_global for v4 in carried if v4 is not None)
