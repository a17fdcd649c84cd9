"""Gateway settings: keys are stored as digests, never in clear; open mode stays on loopback."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.keys import digest
from app.settings import GatewaySettings


def test_keys_must_be_configured_as_digests(gateway_settings: GatewaySettings) -> None:
    with pytest.raises(ValidationError, match="SHA-256"):
        GatewaySettings.model_validate(
            {**gateway_settings.model_dump(), "api_keys": {"alice": "plain-secret"}}
        )


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", "::", ""])
def test_open_mode_refuses_to_be_published_beyond_loopback(
    gateway_settings: GatewaySettings, address: str
) -> None:
    fields = {**gateway_settings.model_dump(), "published_address": address}
    with pytest.raises(ValidationError, match="IMAGEGEN_API_KEYS"):
        GatewaySettings.model_validate(fields)
    # With a key, or when the operator says so explicitly, it starts.
    GatewaySettings.model_validate({**fields, "api_keys": {"alice": digest("k")}})
    GatewaySettings.model_validate({**fields, "allow_public_open_mode": True})


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "[::1]", "localhost"])
def test_open_mode_on_loopback_starts(gateway_settings: GatewaySettings, address: str) -> None:
    settings = GatewaySettings.model_validate(
        {**gateway_settings.model_dump(), "published_address": address}
    )
    assert settings.open_mode


def test_reservations_that_take_the_whole_total_fail_start_up() -> None:
    keys = {name: "0" * 64 for name in ("a", "b")}
    with pytest.raises(ValueError, match="IMAGEGEN_RESERVED_PER_KEY=10 reserve all"):
        GatewaySettings(api_keys=keys, max_outstanding_jobs=20, reserved_per_key=10)
    assert (
        GatewaySettings(api_keys=keys, max_outstanding_jobs=21, reserved_per_key=10).key_count == 2
    )
