"""Gateway settings, read from the environment when the app is built (never at import)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from jobs.settings import CommonSettings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class GatewaySettings(CommonSettings):
    max_retries: int = Field(2, ge=0, description="Re-runs of a job whose worker died.")
    api_keys: dict[str, str] = Field(
        {},
        description="Client name -> SHA-256 hex of its API key (`python -m app.keys new NAME`). "
        "Empty (and no admin keys): open mode, for local use only.",
    )
    admin_keys: dict[str, str] = Field({}, description="Like api_keys; these see every job.")
    max_body_bytes: int = Field(48 * 2**20, gt=0, description="Largest request body accepted.")
    max_outstanding_jobs: int = Field(10_000, gt=0, description="Unfinished jobs, all keys.")
    max_outstanding_per_key: int = Field(1_000, gt=0, description="Unfinished jobs per key.")
    reserved_per_key: int = Field(
        10,
        ge=0,
        description="Of max_outstanding_jobs, slots only each configured key may use, so one key "
        "filling the rest cannot lock the others out.",
    )
    admit_below_memory_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Admission stops (503 store_full) once Redis holds this fraction of its "
        "maxmemory, so running jobs keep room to store their pictures.",
    )
    max_streams_per_key: int = Field(
        20, gt=0, description="Open event streams per key, in each gateway process."
    )
    max_uploads_per_key: int = Field(
        8,
        gt=0,
        description="Requests over 64 KiB (pictures) one key may have in flight, in each gateway "
        "process; more get 429 too_many_uploads before their body is read.",
    )
    idempotency_ttl_s: int = Field(24 * 3600, gt=0, description="How long Idempotency-Key holds.")
    published_address: str = Field(
        "127.0.0.1",
        description="The host address the API port is published on (docker-compose.yml passes "
        "IMAGEGEN_PUBLISH). Open mode refuses to start on any but a loopback address.",
    )
    allow_public_open_mode: bool = Field(
        False, description="Start in open mode on a non-loopback address anyway."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        [],
        description="Open mode only: host names, besides localhost and IP addresses, the gateway "
        "answers for (comma-separated; e.g. the compose service name another container uses). "
        "Other names get 421, so a web page cannot reach a loopback gateway by DNS rebinding.",
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _hashes_only(cls, keys: dict[str, str]) -> dict[str, str]:
        for name, digest in keys.items():
            if not _SHA256.match(digest):
                raise ValueError(
                    f"key {name!r} must be stored as its SHA-256 hex digest, never in clear "
                    "(python -m app.keys new NAME prints both)"
                )
        return keys

    @model_validator(mode="after")
    def _open_mode_stays_local(self) -> Self:
        public = not _loopback(self.published_address)
        if self.open_mode and public and not self.allow_public_open_mode:
            raise ValueError(
                f"open mode (no API keys) published on {self.published_address}: anyone who "
                "reaches that address could submit and read every job. Set IMAGEGEN_API_KEYS "
                "(python -m app.keys new NAME), publish on 127.0.0.1, or set "
                "IMAGEGEN_ALLOW_PUBLIC_OPEN_MODE=true if that is really wanted"
            )
        return self

    @model_validator(mode="after")
    def _something_left_to_share(self) -> Self:
        if self.reserved_per_key * self.key_count >= self.max_outstanding_jobs:
            raise ValueError(
                f"{self.key_count} keys × IMAGEGEN_RESERVED_PER_KEY={self.reserved_per_key} "
                f"reserve all IMAGEGEN_MAX_OUTSTANDING_JOBS={self.max_outstanding_jobs}: lower "
                "the reservation or raise the total"
            )
        return self

    @property
    def key_count(self) -> int:
        """The keys that hold reserved slots (open mode's one anonymous caller counts one)."""
        return max(1, len(self.api_keys) + len(self.admin_keys))

    @property
    def open_mode(self) -> bool:
        return not self.api_keys and not self.admin_keys


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
