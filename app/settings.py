"""Gateway settings, read from the environment when the app is built (never at import)."""

from __future__ import annotations

from pydantic import Field

from contract.settings import CommonSettings


class GatewaySettings(CommonSettings):
    job_timeout_s: int = Field(600, gt=0, description="Hard limit for one job on a worker.")
    max_retries: int = Field(2, ge=0, description="Re-runs of a job whose worker died.")
