"""Settings both processes read: where Redis and the registry are, and shared limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.chain_rules import JobLimits
from jobs.webhooks import Webhooks

REPO_ROOT = Path(__file__).resolve().parent.parent


class CommonSettings(BaseSettings):
    # Empty variables count as unset (compose passes `${VAR:-}` through as "").
    model_config = SettingsConfigDict(env_prefix="IMAGEGEN_", extra="ignore", env_ignore_empty=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "IMAGEGEN_REDIS_URL"),
    )
    registry: Path = Field(
        REPO_ROOT / "deploy" / "registry.demo.yaml", description="Model registry YAML file."
    )
    result_ttl_s: int = Field(24 * 3600, gt=0, description="How long finished jobs and PNGs stay.")
    max_pixels: int = Field(2048 * 2048, gt=0, description="Pixel budget of the largest stage.")
    max_job_megapixel_steps: float = Field(
        1000.0,
        gt=0,
        description="A job's work budget: output megapixels × steps over its stages and images.",
    )
    sweep_interval_s: float = Field(
        3.0, gt=0, description="How often abandoned jobs (dead workers) are looked for."
    )
    job_timeout_s: int = Field(600, gt=0, description="A job's time limit unless it asks less.")
    max_job_timeout_s: int = Field(3600, gt=0, description="The most a job may ask for.")

    log_level: str = Field("INFO", description="Logs are JSON lines at this level and above.")
    webhook_secret: str | None = Field(
        None,
        description="Signs webhooks (Standard Webhooks: HMAC-SHA256; `whsec_<base64>` or any "
        "text); webhooks are off without it.",
    )
    webhook_allow_private: bool = Field(
        False, description="Allow webhooks to loopback, link-local and private addresses."
    )

    webhook_attempts: int = Field(
        6, ge=1, description="POSTs per webhook before it is recorded `failed`."
    )
    webhook_first_backoff_s: float = Field(
        5.0, gt=0, description="Wait before the second attempt; doubles after each failure."
    )

    @property
    def webhooks(self) -> Webhooks:
        return Webhooks(
            self.webhook_secret,
            self.webhook_allow_private,
            attempts=self.webhook_attempts,
            first_backoff_s=self.webhook_first_backoff_s,
        )

    @property
    def limits(self) -> JobLimits:
        return JobLimits(
            max_pixels=self.max_pixels,
            default_timeout_s=self.job_timeout_s,
            max_timeout_s=self.max_job_timeout_s,
            max_megapixel_steps=self.max_job_megapixel_steps,
        )
