"""The OpenAI Images API: `POST /v1/images/generations`, `POST /v1/images/edits` (multipart; a
picture is re-drawn from it, img2img, inside its mask if it has one), `GET /v1/models`. Each
request is a job on the same admission, keys, caps and budgets as `POST /jobs`; the answer waits
for it, as OpenAI's does, and carries its pictures (`b64_json`) or their URLs (`url`: the job's
image route, with the same key). Errors are OpenAI's shape (`app.openai.errors`)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from app import uploads
from app.deps import AsyncRedisDep, JobEventsDep, JobServiceDep, RegistryDep
from app.events import wait_for_end
from app.keys import Caller, CallerDep
from app.openai.errors import openai_error
from app.openai.mapping import (
    drawing,
    first_model,
    in_openai_terms,
    job_body,
    model_for,
    refuse,
    size_of,
    spec_of,
)
from app.openai.schemas import (
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    ModelItem,
    ModelList,
    OpenAIErrorBody,
    OutputFormat,
    ResponseFormat,
    Size,
)
from app.routes.jobs import JOB_ID_HEADER, WAITED_JOB
from contract.envelope import JobStatus
from contract.spec import JobSpec
from contract.violations import JobRejected

_ERRORS = {
    400: "A field breaks a rule (`param` names it; nothing was queued).",
    401: "No valid API key: send `Authorization: Bearer <key>` (the SDK's api_key).",
    413: "The request body is over the deployment's limit.",
    421: "Open mode only: the `Host` is a name this gateway does not answer for.",
    429: "Too many unfinished jobs for this key; retry after `Retry-After` seconds.",
    502: "The job failed: `code` is its `error.type`.",
    503: "The job store (Redis) is unavailable; retry after `Retry-After` seconds.",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorBody, "description": text} for code, text in _ERRORS.items()
}
router = APIRouter(prefix="/v1", tags=["openai"], responses=_RESPONSES)
_WAIT_MARGIN_S = 120  # past the job's own deadline, which the worker and the janitor enforce
_MEDIA = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def install(app: FastAPI) -> None:
    """The routes, and a document that declares what they answer: their 422s are answered as
    OpenAI's 400 (`app.openai.errors`), so FastAPI's own 422 entry is taken out."""
    app.include_router(router)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # FastAPI caches it in app.openapi_schema: edited in place once
            for path, operations in document["paths"].items():
                if path.startswith(router.prefix):
                    for operation in operations.values():
                        operation["responses"].pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            if "HTTPValidationError" not in json.dumps(document["paths"]):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


@router.post(
    "/images/generations",
    operation_id="openai_images_generations",
    response_model=ImagesResponse,
    responses={200: {"description": "The pictures.", **WAITED_JOB}},
)
async def generations(
    body: ImageGenerationRequest,
    request: Request,
    caller: CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
) -> Any:
    """Pictures from a prompt (OpenAI's `images.generate`)."""
    _check_formats(body.response_format, body.output_format, body.background)
    model = model_for(body.model, registry)
    size = size_of(body.size, model, registry)
    spec = spec_of(job_body(model, size, body.model_dump()))
    answer = _Answer(body.response_format, body.output_format, body.output_compression)
    return await _run(spec, answer, request, caller, jobs, hub, redis)


@router.post(
    "/images/edits",
    operation_id="openai_images_edits",
    response_model=ImagesResponse,
    responses={200: {"description": "The pictures.", **WAITED_JOB}},
)
async def edits(
    request: Request,
    caller: CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
    prompt: Annotated[str, Form(min_length=1)],
    # The SDK sends a list as `image[]`: read from the form below, not declared (a second
    # field for one picture makes generated clients clash on its name).
    image: Annotated[
        list[UploadFile] | None, File(description="The picture (PNG, JPEG); or as image[].")
    ] = None,
    mask: Annotated[
        UploadFile | None,
        File(
            description="A PNG of the picture's size whose transparent parts are re-drawn (alpha "
            "below half), the rest kept pixel for pixel, as OpenAI's."
        ),
    ] = None,
    model: Annotated[str | None, Form()] = None,
    n: Annotated[int, Form(ge=1, le=4)] = 1,
    size: Annotated[Size, Form()] = "auto",
    response_format: Annotated[ResponseFormat, Form()] = "b64_json",
    output_format: Annotated[OutputFormat, Form()] = "png",
    strength: Annotated[
        float, Form(gt=0, le=1, description="How much of the picture is re-drawn.")
    ] = 0.75,
    negative_prompt: Annotated[str | None, Form()] = None,
    seed: Annotated[int | None, Form(ge=0)] = None,
    steps: Annotated[int | None, Form(ge=1, le=150)] = None,
    guidance_scale: Annotated[float | None, Form(ge=0, le=30)] = None,
) -> Any:
    """A picture re-drawn from a prompt (OpenAI's `images.edit`): img2img from the picture at
    `strength`; with a mask, only its transparent part (the job's mask, inverted: a mask with
    transparency is read by its alpha, opaque repaints)."""
    listed = (await request.form()).getlist("image[]")
    sent = [*(image or []), *(f for f in listed if isinstance(f, StarletteUpload))]
    if len(sent) != 1:
        refuse("image", f"send one picture as image (or image[]); {len(sent)} were sent")
    _check_formats(response_format, output_format, None)
    chosen = model_for(model, registry)
    picture = await sent[0].read()
    if size == "auto":  # the picture's own size, to the model's multiple
        size = _own_size(picture, registry.models[first_model(chosen, registry)].arch.size_multiple)
    asked = {"prompt": prompt, "n": n, "negative_prompt": negative_prompt, "seed": seed,
             "steps": steps, "guidance_scale": guidance_scale}  # fmt: skip
    masked = {}
    if mask is not None:
        masked = {"mask": base64.b64encode(await mask.read()).decode(), "invert_mask": True}
    body = job_body(chosen, size_of(size, chosen, registry), asked,
                    init_image=base64.b64encode(picture).decode(), strength=strength,
                    **masked)  # fmt: skip
    spec = spec_of(body)
    answer = _Answer(response_format, output_format, None)
    return await _run(spec, answer, request, caller, jobs, hub, redis)


@router.get("/models", operation_id="openai_models")
async def models(_: CallerDep, registry: RegistryDep) -> ModelList:
    """The registered models that draw from text, then the presets (OpenAI's `models.list`)."""
    return ModelList(
        data=[
            ModelItem(
                id=n, created=0,
                owned_by=f"imagegen:{registry.models[n].architecture}" if n in registry.models
                else "imagegen:preset",
            )
            for n in drawing(registry)
        ]
    )  # fmt: skip


@dataclass(frozen=True)
class _Answer:
    """How the pictures are answered: as base64 or URLs, in which format."""

    response_format: ResponseFormat
    output_format: OutputFormat
    compression: int | None

    def encoded(self, png: bytes) -> str:
        if self.output_format == "png":
            return base64.b64encode(png).decode()
        out = io.BytesIO()
        quality = 90 if self.compression is None else self.compression
        picture = Image.open(io.BytesIO(png)).convert("RGB")
        picture.save(out, format=_MEDIA[self.output_format], quality=quality)
        return base64.b64encode(out.getvalue()).decode()


def _check_formats(response: str, output: str, background: str | None) -> None:
    if response == "url" and output != "png":
        refuse("output_format", "url answers serve the job's PNG; ask response_format b64_json "
               f"for {output}")  # fmt: skip
    if background == "transparent":
        refuse("background", "transparent backgrounds are not served: the models draw opaque "
               "pictures; send auto or opaque")  # fmt: skip


def _own_size(picture: bytes, multiple: int) -> str:
    try:
        width, height = Image.open(io.BytesIO(picture), formats=["PNG", "JPEG", "WEBP"]).size
    except Image.DecompressionBombError:
        refuse("image", "image is too large: send a picture of at most this deployment's pixels")
    except (OSError, ValueError):
        refuse("image", "image is not a PNG or JPEG picture")
    width, height = (max(multiple, side // multiple * multiple) for side in (width, height))
    return f"{width}x{height}"


async def _run(
    spec: JobSpec,
    answer: _Answer,
    request: Request,
    caller: Caller,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
) -> Any:
    try:
        envelope, _ = await run_in_threadpool(jobs.submit, spec, caller.name)
        uploads.admitted()  # from here it only waits: its body is no upload in flight
    except JobRejected as rejected:
        raise in_openai_terms(rejected) from None
    job_id = str(envelope.id)
    assert envelope.spec is not None
    final = await wait_for_end(redis, hub, job_id, envelope.spec.timeout_s + _WAIT_MARGIN_S)
    if final.status is not JobStatus.SUCCEEDED:
        reason = final.error.type.value if final.error else final.status.value
        why = final.error.message if final.error else f"the job ended {final.status.value}"
        item = {"type": reason, "loc": [], "msg": f"{why} (job {job_id})"}
        return JSONResponse(openai_error(502, [item]), status_code=502)
    data = []
    for index in range(len(final.images)):
        if answer.response_format == "url":
            data.append(ImageData(url=f"{request.base_url}jobs/{job_id}/images/{index}"))
            continue
        png = await run_in_threadpool(jobs.image, job_id, index, caller)
        data.append(ImageData(b64_json=await run_in_threadpool(answer.encoded, png)))
    assert final.spec is not None
    made = ImagesResponse(
        created=int(final.created_at.timestamp()),
        data=data,
        output_format=answer.output_format,
        size=f"{final.spec.width}x{final.spec.height}",
    )
    return JSONResponse(made.model_dump(exclude_none=True), headers={JOB_ID_HEADER: job_id})
