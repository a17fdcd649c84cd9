"""Settings both processes read: where Redis and the registry are, and shared limits."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis import Redis

from contract.job_rules import JobLimits
from jobs.pictures import S3Config, S3Pictures
from jobs.redis_client import RedisTarget, Replication, connect, parse_sentinels
from jobs.webhooks import Webhooks

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every IMAGEGEN_* variable a process of this service reads: the gateway's and the workers'
# settings (under `make run` they share one environment, so each accepts the others'). A test
# holds this list to the settings classes.
SETTING_NAMES = frozenset(
    {
        "IMAGEGEN_REDIS_URL", "IMAGEGEN_REDIS_PASSWORD", "IMAGEGEN_REGISTRY",
        "IMAGEGEN_RESULT_TTL_S", "IMAGEGEN_MAX_PIXELS",
        "IMAGEGEN_MAX_JOB_MEGAPIXEL_STEPS", "IMAGEGEN_SWEEP_INTERVAL_S", "IMAGEGEN_JOB_TIMEOUT_S",
        "IMAGEGEN_MAX_JOB_TIMEOUT_S", "IMAGEGEN_LOG_LEVEL", "IMAGEGEN_WEBHOOK_SECRET",
        "IMAGEGEN_WEBHOOK_ALLOW_PRIVATE", "IMAGEGEN_WEBHOOK_ATTEMPTS",
        "IMAGEGEN_WEBHOOK_FIRST_BACKOFF_S", "IMAGEGEN_PICTURE_STORE", "IMAGEGEN_S3_BUCKET",
        "IMAGEGEN_S3_PREFIX", "IMAGEGEN_S3_ENDPOINT_URL", "IMAGEGEN_S3_PRESIGN_S",
        "IMAGEGEN_S3_WRITE_WAIT_S", "IMAGEGEN_REDIS_SENTINELS", "IMAGEGEN_REDIS_SENTINEL_MASTER",
        "IMAGEGEN_REDIS_MIN_REPLICAS", "IMAGEGEN_REDIS_REPLICA_WAIT_MS",
        # the gateway's
        "IMAGEGEN_MAX_RETRIES", "IMAGEGEN_API_KEYS", "IMAGEGEN_ADMIN_KEYS",
        "IMAGEGEN_MAX_BODY_BYTES", "IMAGEGEN_MAX_OUTSTANDING_JOBS",
        "IMAGEGEN_MAX_OUTSTANDING_PER_KEY", "IMAGEGEN_RESERVED_PER_KEY",
        "IMAGEGEN_MAX_STREAMS_PER_KEY", "IMAGEGEN_IDEMPOTENCY_TTL_S",
        "IMAGEGEN_ADMIT_BELOW_MEMORY_FRACTION", "IMAGEGEN_ALLOWED_HOSTS",
        "IMAGEGEN_MAX_UPLOADS_PER_KEY",
        "IMAGEGEN_PUBLISHED_ADDRESS", "IMAGEGEN_ALLOW_PUBLIC_OPEN_MODE",
        # the workers'
        "IMAGEGEN_POOL", "IMAGEGEN_PRELOAD", "IMAGEGEN_NAME", "IMAGEGEN_MEMORY_BUDGET_MB",
        "IMAGEGEN_TORCH_THREADS", "IMAGEGEN_HEARTBEAT_S", "IMAGEGEN_HEARTBEAT_TTL_S",
        "IMAGEGEN_PROGRESS_INTERVAL_S", "IMAGEGEN_BATCH_WINDOW_MS", "IMAGEGEN_MAX_BATCH_IMAGES",
        "IMAGEGEN_MAX_BATCH_MEGAPIXELS", "IMAGEGEN_FINISH_IN_BACKGROUND",
    }
)  # fmt: skip
# Read on the host by docker compose and `make deploy-check`, never by the service itself.
TOOLING_NAMES = frozenset(
    {
        "IMAGEGEN_REGISTRY_FILE", "IMAGEGEN_MODELS_DIR", "IMAGEGEN_PUBLISH", "IMAGEGEN_PORT",
        "IMAGEGEN_DEPLOY_CACHE", "IMAGEGEN_TORCH_WHEELS",
    }
)  # fmt: skip
TEST_PREFIX = "IMAGEGEN_TEST_"  # knobs of the test suite
# Secrets a deployment keeps in files (compose and Kubernetes mount their secrets as files): each
# of these settings can also be read from the file its `<variable>_FILE` names. The Redis URL is
# one: it carries the password (`redis://:<password>@host/0`, or `user:password@` for an ACL
# user).
SECRET_FILES = {
    "redis_url": ("REDIS_URL", "IMAGEGEN_REDIS_URL"),
    "api_keys": ("IMAGEGEN_API_KEYS",),
    "admin_keys": ("IMAGEGEN_ADMIN_KEYS",),
    "webhook_secret": ("IMAGEGEN_WEBHOOK_SECRET",),
    "redis_password": ("IMAGEGEN_REDIS_PASSWORD",),
}
SECRET_FILE_NAMES = frozenset(f"{name}_FILE" for names in SECRET_FILES.values() for name in names)
_JSON_SECRETS = frozenset({"api_keys", "admin_keys"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """IMAGEGEN_* variables nothing reads, each with what it may have meant: a mistyped setting
    would otherwise be silently ignored (a hostile pass found the README's `..._PER_KEY` read
    as a name that did nothing)."""
    known = SETTING_NAMES | TOOLING_NAMES | SECRET_FILE_NAMES
    unknown = []
    for name in sorted(environ):
        if name.startswith("IMAGEGEN_") and name not in known and not name.startswith(TEST_PREFIX):
            close = difflib.get_close_matches(name, sorted(SETTING_NAMES), n=1, cutoff=0.75)
            unknown.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return unknown


class CommonSettings(BaseSettings):
    # Empty variables count as unset (compose passes `${VAR:-}` through as "").
    model_config = SettingsConfigDict(env_prefix="IMAGEGEN_", extra="ignore", env_ignore_empty=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "IMAGEGEN_REDIS_URL"),
    )
    redis_password: str | None = Field(
        None,
        description="Redis's password, where the URL carries none (compose reads it from a "
        "secret: IMAGEGEN_REDIS_PASSWORD_FILE).",
    )
    redis_sentinels: str | None = Field(
        None,
        description="Redis Sentinel's addresses, `host:port,host:port`: every process then "
        "connects to the primary they name (IMAGEGEN_REDIS_SENTINEL_MASTER), and follows a "
        "failover. The Redis URL still gives the password, database and TLS options.",
    )
    redis_sentinel_master: str = Field(
        "imagegen", description="The name the sentinels monitor the primary under."
    )
    redis_min_replicas: int = Field(
        0,
        ge=0,
        description="Replicas that must hold a job before POST /jobs answers 202 (and a "
        "worker's ending before it moves on); 0: no wait. Redis' WAIT.",
    )
    redis_replica_wait_ms: int = Field(
        1000,
        gt=0,
        description="How long to wait for them: then the gateway withdraws the job and "
        "answers 503 `not_replicated`; a worker logs it and goes on.",
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

    picture_store: Literal["redis", "s3"] = Field(
        "redis",
        description="Where PNGs live: `redis` (beside the records), or `s3` (an S3-compatible "
        "bucket: IMAGEGEN_S3_BUCKET; credentials from the AWS variables or files).",
    )
    s3_bucket: str | None = Field(None, description="The bucket, with `picture_store: s3`.")
    s3_prefix: str = Field("imagegen/", description="Key prefix of every object in the bucket.")
    s3_endpoint_url: str | None = Field(
        None,
        description="The S3 API's URL for a store that is not AWS (MinIO, Ceph, R2); "
        "path-style addresses.",
    )
    s3_presign_s: int = Field(
        0,
        ge=0,
        le=7 * 24 * 3600,
        description="0: the gateway streams each picture; more: GET /jobs/{id}/images/{i} "
        "answers 307 to a presigned URL valid this many seconds (clients must reach the store).",
    )
    s3_write_wait_s: float = Field(
        60.0,
        ge=0,
        description="How long a worker retries a picture write (or read) before the job fails "
        "`storage_unavailable`.",
    )

    @model_validator(mode="after")
    def _sentinels_parse(self) -> CommonSettings:
        if self.redis_sentinels:
            parse_sentinels(self.redis_sentinels)  # ValueError names the bad entry
        return self

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> CommonSettings:
        if self.picture_store == "s3" and not self.s3_bucket:
            raise ValueError("IMAGEGEN_PICTURE_STORE=s3 needs IMAGEGEN_S3_BUCKET")
        return self

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        for field, names in SECRET_FILES.items():
            if field not in cls.model_fields:
                continue  # the gateway's keys, on a worker
            for name in names:
                path = os.environ.get(f"{name}_FILE")
                if not path:
                    continue
                if any(os.environ.get(n) for n in names):
                    raise ValueError(f"{name}_FILE and {name} are both set: keep one")
                try:
                    text = Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"{name}_FILE: cannot read {path} ({exc.strerror})") from None
                key = names[0] if field == "redis_url" else field  # its alias, as sources give it
                values[key] = json.loads(text) if field in _JSON_SECRETS else text
        return values

    def model_post_init(self, context: Any, /) -> None:
        unknown = unknown_variables(os.environ)
        if unknown:
            raise ValueError(
                f"unknown settings: {', '.join(unknown)}. Nothing reads them; the settings are "
                f"{', '.join(sorted(SETTING_NAMES))} (docs/operations.md, Settings)"
            )

    @property
    def redis_connection_url(self) -> str:
        """The URL every process connects with: `redis_url`, with `redis_password` put in where
        the URL has none of its own."""
        if not self.redis_password:
            return self.redis_url
        scheme, _, rest = self.redis_url.partition("://")
        if "@" in rest.split("/", 1)[0]:
            return self.redis_url
        return f"{scheme}://:{quote(self.redis_password, safe='')}@{rest}"

    @property
    def redis_target(self) -> RedisTarget:
        sentinels = parse_sentinels(self.redis_sentinels) if self.redis_sentinels else ()
        return RedisTarget(self.redis_connection_url, sentinels, self.redis_sentinel_master)

    def redis(self, **options: Any) -> Redis:
        """A client of the primary: the URL's server, or the one the sentinels name."""
        return connect(self.redis_target, **options)

    @property
    def replication(self) -> Replication | None:
        if not self.redis_min_replicas:
            return None
        return Replication(self.redis_min_replicas, self.redis_replica_wait_ms)

    def pictures(self) -> S3Pictures | None:
        """The object store pictures go to; None: Redis keeps them."""
        if self.picture_store != "s3":
            return None
        assert self.s3_bucket is not None  # _s3_needs_a_bucket
        config = S3Config(
            bucket=self.s3_bucket,
            prefix=self.s3_prefix,
            endpoint_url=self.s3_endpoint_url,
            presign_s=self.s3_presign_s,
            write_wait_s=self.s3_write_wait_s,
        )
        return S3Pictures(config)

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
