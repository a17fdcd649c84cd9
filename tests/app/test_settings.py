"""Gateway settings: keys are stored as digests, never in clear."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import GatewaySettings


def test_keys_must_be_configured_as_digests(gateway_settings: GatewaySettings) -> None:
    with pytest.raises(ValidationError, match="SHA-256"):
        GatewaySettings.model_validate(
            {**gateway_settings.model_dump(), "api_keys": {"alice": "plain-secret"}}
        )
