"""Webhooks: the job envelope POSTed to the client's URL when the job ends.

    POST <webhook_url>
    Content-Type: application/json
    X-Imagegen-Event: completed | failed | canceled
    X-Imagegen-Delivery: <uuid, the same for every retry of one delivery>
    X-Imagegen-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the deployment's
                          IMAGEGEN_WEBHOOK_SECRET>

Delivery is retried with exponential backoff on network errors, 429 and 5xx. URLs that resolve
to loopback, link-local, private or otherwise non-public addresses are refused (server-side
request forgery) unless the deployment allows them; the check runs at admission and again
before each delivery, since DNS answers can change in between.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
from pydantic import AnyHttpUrl

from contract.envelope import JobEnvelope, JobStatus

log = logging.getLogger("imagegen.webhooks")

EVENT_OF = {
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "canceled",
}
SIGNATURE_HEADER = "X-Imagegen-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def refusal(url: str, allow_private: bool) -> str | None:
    """Why `url` may not receive webhooks, or None if it may. Its form (http or https, with a
    host) is the spec's `WebhookUrl` type's business; this checks where it leads."""
    parts = AnyHttpUrl(url)
    assert parts.host is not None  # AnyHttpUrl requires one
    host = parts.host.strip("[]")  # an IPv6 literal keeps its brackets in the URL's host
    try:
        infos = socket.getaddrinfo(host, parts.port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return f"webhook_url host {host!r} does not resolve"
    if allow_private:
        return None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not _public(address):
            return (
                f"webhook_url resolves to {address}, a loopback, link-local or private address; "
                "this deployment only calls public addresses"
            )
    return None


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (well-known and local
# use) and the deprecated IPv4-compatible form (`::127.0.0.1`).
_IPV4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global, and so is any IPv4 address it carries: Python calls `[::127.0.0.1]`, NAT64
    `[64:ff9b::7f00:1]` and 6to4 `[2002:7f00:1::1]` global, yet each can lead to loopback."""
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    carried = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in network for network in _IPV4_IN_LAST_32_BITS):
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(v4.is_global for v4 in carried if v4 is not None)


@dataclass(frozen=True)
class Webhooks:
    secret: str | None
    allow_private: bool
    attempts: int = 5
    first_backoff_s: float = 0.5

    def notify(self, envelope: JobEnvelope) -> threading.Thread | None:
        """Deliver in the background if the job asked for this event; return the thread."""
        spec = envelope.spec
        event = EVENT_OF.get(envelope.status)
        if spec is None or spec.webhook_url is None or event is None or self.secret is None:
            return None
        if spec.webhook_events is not None and event not in spec.webhook_events:
            return None
        body = envelope.model_dump_json().encode()
        thread = threading.Thread(
            target=self.deliver,
            args=(str(spec.webhook_url), body, event),
            daemon=True,
            name=f"webhook-{envelope.id}",
        )
        thread.start()
        return thread

    def deliver(self, url: str, body: bytes, event: str) -> bool:
        assert self.secret is not None
        headers = {
            "Content-Type": "application/json",
            "X-Imagegen-Event": event,
            "X-Imagegen-Delivery": str(uuid.uuid4()),
            SIGNATURE_HEADER: sign(self.secret, body),
        }
        backoff = self.first_backoff_s
        for attempt in range(1, self.attempts + 1):
            reason = refusal(url, self.allow_private)
            if reason is not None:
                log.warning("webhook to %s refused: %s", url, reason)
                return False
            try:
                response = httpx.post(url, content=body, headers=headers, timeout=10)
                if response.is_success:
                    return True
                if response.status_code != 429 and response.status_code < 500:
                    log.warning("webhook to %s: %s, not retried", url, response.status_code)
                    return False
                log.info("webhook to %s: %s (attempt %d)", url, response.status_code, attempt)
            except httpx.HTTPError as exc:
                log.info("webhook to %s failed (attempt %d): %s", url, attempt, exc)
            if attempt < self.attempts:
                time.sleep(backoff)
                backoff *= 2
        log.warning("webhook to %s gave up after %d attempts", url, self.attempts)
        return False
