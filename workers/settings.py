"""Worker settings, read from the environment when the worker starts."""

from __future__ import annotations

from pydantic import Field

from jobs.settings import CommonSettings


class WorkerSettings(CommonSettings):
    pool: str = Field("default", description="The pool of models this worker serves.")
    preload: bool = Field(True, description="Load the pool's `preload` models at start.")
    name: str | None = Field(None, description="Worker name prefix; a unique suffix is added.")
    memory_budget_mb: int | None = Field(
        None, gt=0, description="Evict least recently used models beyond this many MiB."
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads for torch; set it when several workers share "
        "the CPU cores, or they oversubscribe them and each runs many times slower.",
    )
    heartbeat_s: float = Field(2.0, gt=0, description="Heartbeat and presence period.")
    heartbeat_ttl_s: int = Field(
        8, gt=0, description="A job whose worker is silent this long is abandoned and retried."
    )
    progress_interval_s: float = Field(
        0.25, gt=0, description="Least time between progress writes (and cancel checks) per job."
    )
    batch_window_ms: int = Field(
        25,
        ge=0,
        le=2000,
        description="How long a job waits, while other jobs are queued, "
        "for jobs whose first stages ask the same (model, size, steps, sampler, LoRAs...) to "
        "run with it in shared calls; 0 turns batching off.",
    )
    max_batch_images: int = Field(8, ge=1, le=64, description="Pictures per batched call.")
    max_batch_megapixels: float = Field(
        8.0, gt=0, description="Pictures × megapixels per batched call (bounds activations)."
    )
    finish_in_background: bool | None = Field(
        None,
        description="Encode and store a job's pictures on a thread while the next job "
        "denoises (workers/segments/finisher.py); false: within the job's own call. Unset: on "
        "when a model of the pool runs on a GPU, off on a CPU-only worker (there the thread takes "
        "the cores the denoising needs).",
    )
