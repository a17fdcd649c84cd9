"""Worker settings, read from the environment when the worker starts."""

from __future__ import annotations

from pydantic import Field

from contract.settings import CommonSettings


class WorkerSettings(CommonSettings):
    models: list[str] = Field(
        [],
        description='Models this worker serves (IMAGEGEN_MODELS=\'["a","b"]\' or a,b); '
        "empty = every registered model.",
    )
    preload: bool = Field(True, description="Load the registry's preload models at start.")
    name: str | None = Field(None, description="Worker name prefix; a unique suffix is added.")
    heartbeat_s: float = Field(3.0, gt=0, description="Heartbeat period while a job runs.")
    heartbeat_ttl_s: int = Field(
        12, gt=0, description="A job whose worker is silent this long is abandoned and retried."
    )
    progress_interval_s: float = Field(
        0.25, gt=0, description="Least time between progress writes (and cancel checks) per job."
    )
