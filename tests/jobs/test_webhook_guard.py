"""The webhook address guard: public addresses only, in every form an address takes."""

from __future__ import annotations

import time

import pytest

from jobs import webhook_guard
from jobs.webhook_guard import checked_address, refusal
from tests.helpers import dns_that_hangs


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
        # Found by a second one: SIIT's IPv4-translated form, and site-local
        "http://[::ffff:0:7f00:1]/x",
        "http://[::ffff:0:a00:1]/x",
        "http://[fec0::1]/x",
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


def test_the_address_checked_is_the_address_returned() -> None:
    address, reason = checked_address("http://127.0.0.1:9/x", allow_private=True)
    assert reason is None
    assert str(address) == "127.0.0.1"


def test_admission_waits_a_bounded_time_for_a_slow_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name whose DNS never answers held a gateway request thread for the resolver's whole
    # timeout.
    monkeypatch.setattr(webhook_guard, "ADMISSION_LOOKUP_S", 0.2)
    with dns_that_hangs(monkeypatch, "slow.test"):
        started = time.monotonic()
        assert refusal("http://slow.test/hook", allow_private=False) is None  # the attempt checks
        assert time.monotonic() - started < 2.0
        assert refusal("http://127.0.0.1:9/x", allow_private=False) is not None  # others still
