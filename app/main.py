"""The gateway's FastAPI app. `create_app()` builds it from settings; uvicorn runs it with
`uvicorn app.main:create_app --factory`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import docs, errors, request_schemas
from app.a1111 import controlnet, extras, postprocessing
from app.a1111 import routes as a1111
from app.admission import JobService
from app.auth_first import AuthenticateFirst, UploadsPerKey
from app.body_limit import BodySizeLimit
from app.errors import documented
from app.events import JobEvents, StreamSlots
from app.hosts import OpenModeHosts
from app.keys import KeyRing
from app.openai import routes as openai
from app.openai.errors import OpenAIErrors
from app.routes import health, jobs, models
from app.settings import GatewaySettings
from contract.job_rules import load_registry
from jobs import lifecycle, logs
from jobs.caps import Caps
from jobs.idempotency import Idempotency
from jobs.janitor import sweep
from jobs.lifecycle import Lifecycle
from jobs.redis_client import connect_async
from jobs.room import StoreRoom
from jobs.store import JobStore

DESCRIPTION = """
Queue Stable Diffusion 1.5, SDXL (base + refiner), SD3.5, Flux and Chroma jobs that chain
stages: a base generation, a refiner, hires fixes.

**Latent or pixel handoff.** A stage may take the previous stage's *latents* only when both models
share one latent space (one VAE): SDXL base → SDXL refiner, Flux → Flux, Flux ↔ Chroma (another
transformer on Flux's VAE), SD3.5 → SD3.5.
SD1.5 → SDXL, SD1.5 → Flux and SD3.5 → Flux are refused with 422 `latent_space_mismatch` before
anything is queued: use `handoff: "pixel"` (decode with the first model, resize, encode with the
second), which is how Flux serves as a hires fix for an SD1.5 picture.

`POST /jobs` answers 202 with the job envelope; poll `GET /jobs/{id}` until `status` is
`succeeded`, `failed` or `canceled`, then fetch `images[i].url`.
"""


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    logs.configure(settings.log_level)
    registry = load_registry(settings.registry)
    redis = settings.redis(health_check_interval=30)
    store = JobStore(redis, settings.result_ttl_s, settings.pictures(), settings.replication)
    ends = Lifecycle(store, settings.webhooks)
    lifecycle.install(ends)  # for jobs the janitor finds abandoned

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        janitor = asyncio.create_task(_janitor(ends, settings.sweep_interval_s))
        app.state.job_events.start()
        yield
        janitor.cancel()
        await app.state.job_events.stop()
        await app.state.async_redis.aclose()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # served by app.docs, without a CDN
        redoc_url=None,
        responses=documented(421, by_reference=True),  # every route, in open mode (app.hosts)
        title="imagegen",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "jobs", "description": "Submit, poll and fetch image jobs."},
            {"name": "models", "description": "What this deployment serves."},
            {"name": "health", "description": "Liveness."},
            {
                "name": "a1111",
                "description": "AUTOMATIC1111's web API (`/sdapi/v1`, as Forge keeps it) on the "
                "same queue: existing A1111 clients work unchanged. See docs/a1111.md.",
            },
            {
                "name": "openai",
                "description": "The OpenAI Images API (`/v1`) on the same queue: the openai SDKs, "
                "Open WebUI, LibreChat work unchanged. See docs/openai.md.",
            },
        ],
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.store = store
    # Blocking: a burst (every stream of a job waking at once) waits for a free connection
    # instead of failing with "Too many connections".
    app.state.async_redis = connect_async(settings.redis_target, max_connections=100, timeout=10)
    app.state.job_events = JobEvents(app.state.async_redis)
    app.state.stream_slots = StreamSlots(settings.max_streams_per_key)
    app.state.keys = KeyRing(settings.api_keys, settings.admin_keys)
    if settings.open_mode:
        logging.getLogger("imagegen.gateway").warning(
            "OPEN MODE: no API keys are configured, so anyone who can reach this port can "
            "submit and read every job. Set IMAGEGEN_API_KEYS before exposing it."
        )
    app.state.jobs = JobService(
        ends,
        registry,
        settings.limits,
        settings.max_retries,
        Caps(
            redis,
            settings.max_outstanding_jobs,
            settings.max_outstanding_per_key,
            settings.reserved_per_key,
            settings.key_count,
        ),
        Idempotency(redis, settings.idempotency_ttl_s),
        StoreRoom(redis, settings.admit_below_memory_fraction),
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(UploadsPerKey, keys=app.state.keys, limit=settings.max_uploads_per_key)
    # Added after, so it runs before: no body is read for a caller without a key.
    app.add_middleware(AuthenticateFirst, keys=app.state.keys)
    if settings.open_mode:  # before anything else reads the request (see app.hosts)
        app.add_middleware(OpenModeHosts, names=frozenset(settings.allowed_hosts))
    # Outermost: every /v1 error, the ones above included, in OpenAI's shape.
    app.add_middleware(OpenAIErrors)
    errors.install(app)
    docs.install(app, app.state.keys.open)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(a1111.router)
    app.include_router(extras.router)
    app.include_router(postprocessing.router)
    openai.install(app)
    request_schemas.install(app)
    app.include_router(controlnet.router)
    return app


async def _janitor(ends: Lifecycle, interval_s: float) -> None:
    """Retry or fail jobs whose worker died, even when no worker of their pool is alive."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(sweep, ends, interval_s)
        except Exception:  # Redis down: try again next interval
            logging.getLogger("imagegen.gateway").warning("janitor sweep failed", exc_info=True)
