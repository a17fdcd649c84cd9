"""Webhook delivery: signature, retries with backoff, and the address guard."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from jobs.webhooks import Webhooks, refusal, sign
from tests.receiver import Receiver


def test_delivery_is_retried_with_backoff() -> None:
    flaky = Receiver(fail_first=2)
    try:
        hooks = Webhooks(secret="s", allow_private=True, attempts=4, first_backoff_s=0.05)
        started = time.monotonic()
        assert hooks.deliver(flaky.url, b"{}", "completed")
        assert len(flaky.received) == 3
        assert time.monotonic() - started >= 0.05 + 0.1  # two waits, doubling
        ids = {d["headers"]["X-Imagegen-Delivery"] for d in flaky.received}
        assert len(ids) == 1  # one delivery, retried: the receiver can deduplicate
    finally:
        flaky.close()


def test_signature_verifies_as_the_readme_says() -> None:
    body = b'{"id": "x"}'
    signature = sign("secret", body)
    expected = "sha256=" + hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert sign("other", body) != signature


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://192.168.0.10/x",
        # Found by a hostile pass: IPv6 forms that carry a loopback IPv4 address, which
        # Python's `is_global` calls public.
        "http://[::127.0.0.1]/x",
        "http://[64:ff9b::7f00:1]/x",
        "http://[64:ff9b:1::a00:1]/x",
        "http://[2002:7f00:1::1]/x",
        "http://[::ffff:127.0.0.1]/x",
    ],
)
def test_non_public_addresses_are_refused(url: str) -> None:
    reason = refusal(url, allow_private=False)
    assert reason is not None
    assert "address" in reason
    assert refusal(url, allow_private=True) is None


def test_public_addresses_pass_in_every_form() -> None:
    # Literals only: nothing is resolved or sent.
    for url in (
        "http://93.184.215.14/x",
        "http://[2606:4700::1]/x",
        "http://[64:ff9b::5db8:d70e]/x",
    ):
        assert refusal(url, allow_private=False) is None, url


def test_a_host_that_does_not_resolve_is_refused() -> None:
    reason = refusal("http://no-such-host.invalid/x", allow_private=True)
    assert reason is not None
    assert "does not resolve" in reason
