"""Gateway settings, read from the environment when the app is built (never at import)."""

from __future__ import annotations

from pydantic import Field

from contract.settings import CommonSettings


class GatewaySettings(CommonSettings):
    max_retries: int = Field(2, ge=0, description="Re-runs of a job whose worker died.")
