"""AUTOMATIC1111's web API (`/sdapi/v1`, which Forge keeps), served on the job queue.

A txt2img or img2img request becomes a job through the same admission as `POST /jobs` (caps,
budgets, the latent-space rule), owned by the caller's key and visible in `/jobs`; the request
then holds its connection until the job ends, as A1111 is synchronous. `progress`, `interrupt`
and `skip` act on the caller's current A1111 job. `options` sets a checkpoint and a VAE per key.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app import uploads
from app.a1111.mapping import (
    LATENT_UPSCALERS,
    PIXEL_UPSCALERS,
    chosen_vae,
    img2img_spec,
    in_a1111_terms,
    resolve_checkpoint,
    txt2img_spec,
)
from app.a1111.schemas import (
    EmbeddingItem,
    EmbeddingsResponse,
    ImageResponse,
    Img2ImgRequest,
    LatentUpscalerModeItem,
    ProgressResponse,
    ProgressState,
    SamplerItem,
    SchedulerItem,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    Txt2ImgRequest,
    UpscalerItem,
)
from app.admission import JobAlreadyFinished, JobNotFound
from app.deps import AsyncRedisDep, JobEventsDep, JobServiceDep, RegistryDep
from app.errors import documented
from app.events import JobEvents, wait_for_end
from app.keys import A1111CallerDep, Caller
from app.routes.jobs import JOB_ID_HEADER, WAITED_JOB
from contract.architectures import ARCHITECTURES
from contract.envelope import JobEnvelope, JobStatus
from contract.registry import ModelRegistry
from contract.samplers import SCHEDULE_LABELS, samplers_for
from contract.spec import JobSpec
from contract.violations import JobRejected
from jobs.redis_keys import (
    a1111_checkpoint_key,
    a1111_current_key,
    a1111_vae_key,
    job_key,
    text,
)
from jobs.store import envelope_from_hash

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], responses=documented(401, 503))

_RUN_RESPONSES = {
    **documented(400, 413, 422, 429, 502),
    200: {"description": "The job ended: its PNGs (none if it was interrupted).", **WAITED_JOB},
}
_WAIT_MARGIN_S = 120  # past the job's own deadline, which the worker and the janitor enforce


@router.post(
    "/txt2img",
    operation_id="a1111_txt2img",
    response_model=ImageResponse,
    responses=_RUN_RESPONSES,
)
async def txt2img(
    body: Txt2ImgRequest,
    caller: A1111CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
) -> Any:
    """Text to image, with A1111's hires fix (`enable_hr`) and refiner fields."""
    checkpoint = await _checkpoint(body.override_settings, caller, redis, registry)
    spec = txt2img_spec(body, checkpoint, registry, await _stored_vae(caller, redis, registry))
    return await _run(spec, body, body.model_dump(), checkpoint, caller, jobs, hub, redis)


@router.post(
    "/img2img",
    operation_id="a1111_img2img",
    response_model=ImageResponse,
    responses=_RUN_RESPONSES,
)
async def img2img(
    body: Img2ImgRequest,
    caller: A1111CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
) -> Any:
    """Image to image from `init_images[0]`, re-noised by `denoising_strength`."""
    checkpoint = await _checkpoint(body.override_settings, caller, redis, registry)
    spec = img2img_spec(body, checkpoint, registry, await _stored_vae(caller, redis, registry))
    echoed = body.model_dump()
    if not body.include_init_images:  # as A1111 answers
        echoed.update(init_images=None, mask=None)
    return await _run(spec, body, echoed, checkpoint, caller, jobs, hub, redis)


async def _run(
    spec: JobSpec,
    request: Txt2ImgRequest | Img2ImgRequest,
    echoed: dict[str, Any],
    checkpoint: str,
    caller: Caller,
    jobs: JobServiceDep,
    hub: JobEvents,
    redis: AsyncRedisDep,
) -> Any:
    try:
        envelope = await submitted(spec, caller, jobs)
    except JobRejected as rejected:
        raise in_a1111_terms(rejected, spec, request) from None
    ended = await waited(envelope, caller, jobs, hub, redis)
    if isinstance(ended, JSONResponse):
        return ended
    final, pngs = ended
    info = _info(final, echoed, pngs, checkpoint)
    answer = ImageResponse(
        images=[base64.b64encode(png).decode() for png in pngs],
        parameters=jsonable_encoder(echoed),
        info=json.dumps(info),
    )
    return JSONResponse(answer.model_dump(), headers={JOB_ID_HEADER: str(final.id)})


async def submitted(spec: JobSpec, caller: Caller, jobs: JobServiceDep) -> JobEnvelope:
    """The A1111 request's job, admitted (JobRejected as admission refuses it)."""
    envelope, _ = await run_in_threadpool(jobs.submit, spec, caller.name)
    uploads.admitted()  # from here it only waits: its body is no upload in flight
    return envelope


async def waited(
    envelope: JobEnvelope, caller: Caller, jobs: JobServiceDep, hub: JobEvents, redis: AsyncRedisDep
) -> tuple[JobEnvelope, list[bytes]] | JSONResponse:
    """The job once it ended, with its PNGs (none if it was interrupted), as the caller's
    current A1111 job meanwhile (`progress`, `interrupt`); a failed job as A1111 clients read a
    failure (502, its reason and id)."""
    job_id = str(envelope.id)
    assert envelope.spec is not None
    wait_s = envelope.spec.timeout_s + _WAIT_MARGIN_S
    await redis.set(a1111_current_key(caller.name), job_id, ex=wait_s)
    try:
        final = await wait_for_end(redis, hub, job_id, wait_s)
    finally:
        if text(await redis.get(a1111_current_key(caller.name)) or b"") == job_id:
            await redis.delete(a1111_current_key(caller.name))
    if final.status is JobStatus.FAILED:
        assert final.error is not None
        item: dict[str, Any] = {
            "type": final.error.type.value,
            "loc": [],
            "msg": f"{final.error.message} (job {job_id})",
            "ctx": {"job_id": job_id},
        }
        return JSONResponse({"detail": [item]}, status_code=502)
    pngs: list[bytes] = []
    if final.status is JobStatus.SUCCEEDED:
        for index in range(len(final.images)):
            png = await run_in_threadpool(jobs.store.image, job_id, index)  # Redis or S3
            if png is not None:
                pngs.append(png)
    return final, pngs


def _info(
    final: JobEnvelope, echoed: dict[str, Any], pngs: list[bytes], checkpoint: str
) -> dict[str, Any]:
    """A1111's `info`: what ran, with each PNG's `parameters` text as `infotexts`."""
    spec = final.spec
    assert spec is not None  # a succeeded job's record was readable
    seeds = spec.seeds
    infotexts = [str(Image.open(io.BytesIO(png)).text["parameters"]) for png in pngs]  # type: ignore[attr-defined]
    sampler = final.trace[0].sampler if final.trace else echoed.get("sampler_name")
    return {
        "prompt": echoed["prompt"],
        "all_prompts": [echoed["prompt"]] * len(seeds),
        "negative_prompt": echoed["negative_prompt"],
        "all_negative_prompts": [echoed["negative_prompt"]] * len(seeds),
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": seeds[0],
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": spec.width,
        "height": spec.height,
        "sampler_name": sampler,
        "cfg_scale": echoed["cfg_scale"],
        "steps": echoed["steps"],
        "batch_size": echoed["batch_size"],
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": checkpoint,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": echoed.get("denoising_strength"),
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": echoed.get("styles") or [],
        "job_timestamp": final.created_at.strftime("%Y%m%d%H%M%S"),
        "clip_skip": spec.stages[0].clip_skip or 1,
        "is_using_inpainting_conditioning": False,
        "version": "imagegen",
        "interrupted": final.status is JobStatus.CANCELED,
        "imagegen_job_id": str(final.id),
    }


async def _checkpoint(
    override: dict[str, Any] | None, caller: Caller, redis: AsyncRedisDep, registry: ModelRegistry
) -> str:
    """The request's checkpoint: its override, else the key's `options` choice, else the
    registry's default (`a1111_default_checkpoint`, or its first text-to-image model)."""
    loc = ("override_settings", "sd_model_checkpoint")
    wanted = (override or {}).get("sd_model_checkpoint")
    if wanted:
        found = resolve_checkpoint(str(wanted), registry)
        if found is None:
            _unknown_checkpoint(str(wanted), loc, registry)
        assert found is not None
        return found
    current = await _current_checkpoint(caller, redis, registry)
    if current is None:
        msg = "no registered model draws from text, so there is no default checkpoint; name one"
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}]
        )
    return current


async def _current_checkpoint(
    caller: Caller, redis: AsyncRedisDep, registry: ModelRegistry
) -> str | None:
    """The key's `options` choice, else the registry's default checkpoint."""
    chosen = await redis.get(a1111_checkpoint_key(caller.name))
    if chosen is not None and resolve_checkpoint(text(chosen), registry) == text(chosen):
        return text(chosen)
    return registry.a1111_checkpoint


async def _stored_vae(caller: Caller, redis: AsyncRedisDep, registry: ModelRegistry) -> str | None:
    """The key's `options` choice of VAE, while it is registered (None: the model's own)."""
    chosen = await redis.get(a1111_vae_key(caller.name))
    return text(chosen) if chosen is not None and text(chosen) in registry.vaes else None


def _unknown_checkpoint(name: str, loc: tuple[str, ...], registry: ModelRegistry) -> None:
    msg = (
        f"checkpoint {name!r} is not registered; GET /sdapi/v1/sd-models lists them: "
        f"{', '.join(registry.names())}"
    )
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": name}]
    )


@router.get("/progress", operation_id="a1111_progress")
async def progress(caller: A1111CallerDep, redis: AsyncRedisDep) -> ProgressResponse:
    """The caller's current A1111 job: fraction done, seconds left, step of its stage."""
    job_id = await redis.get(a1111_current_key(caller.name))
    envelope = None
    if job_id is not None:
        raw: dict[bytes, bytes] = await redis.hgetall(job_key(text(job_id)))  # type: ignore[assignment]
        envelope = envelope_from_hash(text(job_id), raw) if raw else None
    done = envelope.progress if envelope is not None else None
    state = ProgressState(
        skipped=False,
        interrupted=envelope is not None and envelope.status is JobStatus.CANCELED,
        job=f"task({envelope.id})" if envelope is not None else "",
        job_count=1 if envelope is not None else 0,
        job_timestamp=envelope.created_at.strftime("%Y%m%d%H%M%S") if envelope else "0",
        job_no=0,
        sampling_step=done.step if done else 0,
        sampling_steps=done.steps if done else 0,
    )
    return ProgressResponse(
        progress=done.fraction if done else 0.0,
        eta_relative=(done.eta_s or 0.0) if done else 0.0,
        state=state,
        current_image=None,
        textinfo=None,
    )


@router.post("/interrupt", operation_id="a1111_interrupt")
async def interrupt(
    caller: A1111CallerDep, jobs: JobServiceDep, redis: AsyncRedisDep
) -> dict[str, Any]:
    """Stop the caller's current A1111 job at its next step; its request returns no image."""
    job_id = await redis.get(a1111_current_key(caller.name))
    if job_id is not None:
        with contextlib.suppress(JobAlreadyFinished, JobNotFound):
            await run_in_threadpool(jobs.cancel, text(job_id), caller)
    return {}


@router.post("/skip", operation_id="a1111_skip")
async def skip(caller: A1111CallerDep, jobs: JobServiceDep, redis: AsyncRedisDep) -> dict[str, Any]:
    """As `interrupt`: a job's images are made together, so there is no single one to skip."""
    return await interrupt(caller, jobs, redis)


@router.get("/options", operation_id="a1111_get_options")
async def get_options(
    caller: A1111CallerDep, redis: AsyncRedisDep, registry: RegistryDep
) -> dict[str, Any]:
    """The options A1111 clients read: the key's checkpoint and VAE (others are not settings
    here)."""
    checkpoint = await _current_checkpoint(caller, redis, registry)
    vae = await _stored_vae(caller, redis, registry)
    return {
        "sd_model_checkpoint": checkpoint,
        "sd_vae": vae or "Automatic",
        "samples_format": "png",
        "sd_checkpoint_hash": None,
    }


@router.post("/options", operation_id="a1111_set_options", responses=documented(400, 413, 422))
async def set_options(
    caller: A1111CallerDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
    body: dict[str, Any] = Body(...),  # noqa: B008 (FastAPI's way to take any JSON object)
) -> dict[str, Any]:
    """Set the key's checkpoint (`sd_model_checkpoint`) and VAE (`sd_vae`: its later requests'
    stages of that VAE's latent space decode with it; `Automatic` or `None`: the checkpoint's
    own); other options are accepted and ignored."""
    if "sd_vae" in body:
        vae = chosen_vae(str(body["sd_vae"]), registry, ("sd_vae",))
        if vae is None:
            await redis.delete(a1111_vae_key(caller.name))
        else:
            await redis.set(a1111_vae_key(caller.name), vae)
    wanted = body.get("sd_model_checkpoint")
    if wanted:
        found = resolve_checkpoint(str(wanted), registry)
        if found is None:
            _unknown_checkpoint(str(wanted), ("sd_model_checkpoint",), registry)
        assert found is not None
        await redis.set(a1111_checkpoint_key(caller.name), found)
    return {}


@router.get("/sd-models", operation_id="a1111_sd_models")
async def sd_models(_: A1111CallerDep, registry: RegistryDep) -> list[SDModelItem]:
    """The registered models that draw from text (and refiners), then the presets, as
    checkpoints."""
    items = []
    for name in registry.names():
        entry = registry.models[name]
        # A refiner, too: A1111 names it as a checkpoint (refiner_checkpoint).
        if entry.arch.text_to_image or entry.arch.mid_schedule_handoff:
            source = entry.source
            # Its file's or folder's own name (a hub id as it is): the host's layout is nobody's
            # business.
            local = getattr(source, "single_file", None) or getattr(source, "folder", None)
            filename = Path(local).name if local else str(getattr(source, "hub", None) or name)
            items.append(
                SDModelItem(
                    title=name,
                    model_name=name,
                    hash=None,
                    sha256=None,
                    filename=filename,
                    config=None,
                )
            )
    for name in sorted(registry.presets):  # a whole chain, picked as a checkpoint
        items.append(SDModelItem(title=name, model_name=name, hash=None, sha256=None,
                                 filename=f"preset:{name}", config=None))  # fmt: skip
    return items


@router.get("/sd-vae", operation_id="a1111_sd_vae")
async def sd_vae(_: A1111CallerDep, registry: RegistryDep) -> list[SDVaeItem]:
    """The registered VAEs, for `override_settings.sd_vae` (or `options`); `Automatic` and
    `None`, which mean the checkpoint's own, are not listed, as A1111 lists none of them."""
    return [
        SDVaeItem(model_name=name, filename=str(entry.file))
        for name, entry in sorted(registry.vaes.items())
    ]


@router.get("/embeddings", operation_id="a1111_embeddings")
async def embeddings(
    caller: A1111CallerDep, redis: AsyncRedisDep, registry: RegistryDep
) -> EmbeddingsResponse:
    """The registered embeddings, as A1111 answers: `loaded` those of the caller's current
    checkpoint's architecture, `skipped` the rest."""
    checkpoint = await _current_checkpoint(caller, redis, registry)
    entry = registry.get(checkpoint) if checkpoint is not None else None
    answer = EmbeddingsResponse(loaded={}, skipped={})
    for name, embedding in sorted(registry.embeddings.items()):
        keys = ARCHITECTURES[embedding.architecture].embedding_keys
        width = embedding.width or (keys.widths[0] if keys is not None else 0)
        item = EmbeddingItem(
            step=None,
            sd_checkpoint=None,
            sd_checkpoint_name=None,
            shape=width,
            vectors=embedding.vectors or 0,
        )
        fits = entry is not None and entry.architecture == embedding.architecture
        (answer.loaded if fits else answer.skipped)[name] = item
    return answer


@router.get("/samplers", operation_id="a1111_samplers")
async def samplers(_: A1111CallerDep) -> list[SamplerItem]:
    """Every sampler of some model here (Flux takes Euler only; GET /models says per model)."""
    return [
        SamplerItem(name=s.name, aliases=list(s.aliases), options={})
        for s in samplers_for("sd15").values()
    ]


@router.get("/schedulers", operation_id="a1111_schedulers")
async def schedulers(_: A1111CallerDep) -> list[SchedulerItem]:
    return [
        SchedulerItem(name=n, label=label, aliases=None, default_rho=-1, need_inner_model=False)
        for n, label in SCHEDULE_LABELS.items()
    ]


@router.get("/upscalers", operation_id="a1111_upscalers")
async def upscalers(_: A1111CallerDep, registry: RegistryDep) -> list[UpscalerItem]:
    """Pixel upscalers for `hr_upscaler`: the plain resizes, then the registered upscaler
    models (named as the registry names them)."""
    resizes = [
        UpscalerItem(name=n, model_name=None, model_path=None, model_url=None, scale=None)
        for n in PIXEL_UPSCALERS
    ]
    models = [
        UpscalerItem(
            name=name, model_name=name, model_path=entry.file.name, model_url=None, scale=None
        )
        for name, entry in sorted(registry.upscalers.items())
    ]
    return resizes + models


@router.get("/latent-upscale-modes", operation_id="a1111_latent_upscale_modes")
async def latent_upscale_modes(_: A1111CallerDep) -> list[LatentUpscalerModeItem]:
    """Latent upscalers for `hr_upscaler`: only within one latent space."""
    return [LatentUpscalerModeItem(name=n) for n in LATENT_UPSCALERS]


@router.get("/scripts", operation_id="a1111_scripts")
async def scripts(_: A1111CallerDep) -> ScriptsList:
    """No scripts here (clients ask at start-up)."""
    return ScriptsList(txt2img=[], img2img=[])
