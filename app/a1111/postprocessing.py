"""A1111's Extras upscaling (`/sdapi/v1/extra-single-image`, `/extra-batch-images`), served as
upscale jobs (contract.upscale_jobs): each picture a job on the queue like any other, run by a
worker with the registry's upscaler models or a resampler, no diffusion; the request holds its
connection until every job ends, as A1111 does.

What the Extras tab does and this service does not (face restoration, a second upscaler blended
in) is refused with a 422 naming the field, not ignored: the picture would not be what was asked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import io
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from PIL.Image import DecompressionBombError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from app.a1111.mapping import PIXEL_UPSCALERS
from app.a1111.routes import submitted, waited
from app.admission import JobAlreadyFinished, JobNotFound
from app.deps import AsyncRedisDep, JobEventsDep, JobServiceDep, RegistryDep
from app.errors import documented
from app.keys import A1111CallerDep, Caller
from app.routes.jobs import JOB_ID_HEADER, WAITED_JOB
from contract.envelope import JobEnvelope
from contract.registry import ModelRegistry
from contract.spec import JobSpec
from contract.violations import JobRejected, Violation

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], responses=documented(401, 503))

_RESPONSES = {
    **documented(400, 413, 422, 429, 502),
    200: {"description": "Every job ended: the upscaled PNGs.", **WAITED_JOB},
}
_SIDES = (64, 4096)  # an upscale job's picture, a side (contract.spec.Size)


class ExtrasRequest(BaseModel):
    """A1111's ExtrasBaseRequest."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    resize_mode: Literal[0, 1] = Field(
        0, description="0: by upscaling_resize; 1: to upscaling_resize_w x upscaling_resize_h."
    )
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1, description="Not served: 0 only.")
    codeformer_visibility: float = Field(0, ge=0, le=1, description="Not served: 0 only.")
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, ge=1, le=8, description="resize_mode 0: the factor.")
    upscaling_resize_w: int = Field(512, ge=1, le=8192)
    upscaling_resize_h: int = Field(512, ge=1, le=8192)
    upscaling_crop: bool = Field(
        True, description="resize_mode 1: crop to the size (else scaled to cover it only)."
    )
    upscaler_1: str | None = Field(
        "None",
        description="GET /sdapi/v1/upscalers lists them (None: A1111's plain Lanczos resize).",
    )
    upscaler_2: str | None = Field("None", description="Only with visibility 0.")
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1, description="Not served: 0.")
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasRequest):
    image: str = Field("", description="Base64 PNG or JPEG.")


class FileData(BaseModel):
    model_config = ConfigDict(strict=True)

    data: str = Field(description="Base64 PNG or JPEG.")
    name: str


class ExtrasBatchImagesRequest(ExtrasRequest):
    imageList: list[FileData] = Field(min_length=1, max_length=16)  # A1111's name


class ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(description="What was done, as A1111's Extras tab says it.")
    image: str = Field(description="The upscaled PNG, base64.")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str] = Field(description="The upscaled PNGs, base64, in the request's order.")


@router.post(
    "/extra-single-image",
    operation_id="a1111_extra_single_image",
    response_model=ExtrasSingleImageResponse,
    responses=_RESPONSES,
)
async def extra_single_image(
    body: ExtrasSingleImageRequest,
    caller: A1111CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
) -> Any:
    """One picture upscaled (an upscale job)."""
    pictures = [(body.image, ("image",))]
    ended = await _upscaled(pictures, body, caller, jobs, hub, redis, registry)
    if isinstance(ended, JSONResponse):
        return ended
    ids, pngs, info = ended
    # Interrupted (`/sdapi/v1/interrupt`): no picture, as A1111 answers then.
    answer = ExtrasSingleImageResponse(html_info=info, image=pngs[0] if pngs else "")
    return JSONResponse(answer.model_dump(), headers={JOB_ID_HEADER: ids[0]})


@router.post(
    "/extra-batch-images",
    operation_id="a1111_extra_batch_images",
    response_model=ExtrasBatchImagesResponse,
    responses=_RESPONSES,
)
async def extra_batch_images(
    body: ExtrasBatchImagesRequest,
    caller: A1111CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: RegistryDep,
) -> Any:
    """Each picture of `imageList` upscaled, one upscale job each (the header names the
    first)."""
    pictures = [(item.data, ("imageList", k, "data")) for k, item in enumerate(body.imageList)]
    ended = await _upscaled(pictures, body, caller, jobs, hub, redis, registry)
    if isinstance(ended, JSONResponse):
        return ended
    ids, pngs, info = ended
    answer = ExtrasBatchImagesResponse(html_info=info, images=pngs)
    return JSONResponse(answer.model_dump(), headers={JOB_ID_HEADER: ids[0]})


Loc = tuple[str | int, ...]


async def _upscaled(
    pictures: Sequence[tuple[str, Loc]],
    request: ExtrasRequest,
    caller: A1111CallerDep,
    jobs: JobServiceDep,
    hub: JobEventsDep,
    redis: AsyncRedisDep,
    registry: ModelRegistry,
) -> tuple[list[str], list[str], str] | JSONResponse:
    """Every picture's upscale job (each picture with where it stands in the request), admitted
    in order, then waited for: their ids, base64 PNGs and A1111's `html_info`; or the first
    refusal's or failure's answer, the request's other jobs canceled (nothing runs for an
    answer that is not coming). Every spec's fields are checked before any job is queued."""
    specs = [(upscale_spec(picture, loc, request, registry), loc) for picture, loc in pictures]
    envelopes: list[JobEnvelope] = []
    try:
        for spec, loc in specs:
            try:
                envelopes.append(await submitted(spec, caller, jobs))
            except JobRejected as rejected:
                raise _in_extras_terms(rejected, loc) from None
    except Exception:
        await _cancel(envelopes, caller, jobs)
        raise
    pngs, info = [], ""
    for k, envelope in enumerate(envelopes):
        ended = await waited(envelope, caller, jobs, hub, redis)
        if isinstance(ended, JSONResponse):
            await _cancel(envelopes[k + 1 :], caller, jobs)
            return ended
        _, made = ended
        if not made:  # interrupted: A1111 answers what it has
            continue
        pngs.append(base64.b64encode(made[0]).decode())
        text = Image.open(io.BytesIO(made[0])).text.get("postprocessing", "")  # type: ignore[attr-defined]
        info = f"<p>{html.escape(text)}</p>"
    return [str(e.id) for e in envelopes], pngs, info


async def _cancel(envelopes: list[JobEnvelope], caller: Caller, jobs: JobServiceDep) -> None:
    """Cancel the request's other jobs (one that ended already stays as it is)."""
    for envelope in envelopes:
        with contextlib.suppress(JobAlreadyFinished, JobNotFound):
            await run_in_threadpool(jobs.cancel, str(envelope.id), caller)


def upscale_spec(
    picture: str, loc: Loc, request: ExtrasRequest, registry: ModelRegistry
) -> JobSpec:
    """A1111's Extras fields as an upscale job's spec, or the field's 422."""
    if request.gfpgan_visibility or request.codeformer_visibility:
        name = "gfpgan_visibility" if request.gfpgan_visibility else "codeformer_visibility"
        _refuse((name,), "face restoration is not served (GET /sdapi/v1/face-restorers lists "
                "none); send 0")  # fmt: skip
    if request.extras_upscaler_2_visibility and request.upscaler_2 not in (None, "None"):
        _refuse(("extras_upscaler_2_visibility",), "a second upscaler blended in is not "
                "served; send 0, or upscaler_2 None")  # fmt: skip
    stage: dict[str, Any] = {"mode": "upscale", "upscaler": _upscaler(request, registry)}
    width, height = _size(picture, loc)
    if request.resize_mode == 0:
        stage["scale"] = request.upscaling_resize
    elif request.upscaling_crop:
        stage.update(width=request.upscaling_resize_w, height=request.upscaling_resize_h)
    else:  # scaled to cover the size, not cropped: a factor
        ratio = max(request.upscaling_resize_w / width, request.upscaling_resize_h / height)
        stage["scale"] = max(ratio, 1.0)
    body = {"width": width, "height": height, "init_image": picture, "stages": [stage]}
    try:
        return JobSpec.model_validate(body)
    except ValidationError as invalid:
        errors = []
        for error in invalid.errors():
            at = _EXTRAS_FIELDS.get(tuple(error["loc"]), loc)
            errors.append({**error, "loc": ("body", *at)})
        raise RequestValidationError(errors) from None


def _upscaler(request: ExtrasRequest, registry: ModelRegistry) -> str:
    name = request.upscaler_1 or "None"
    if name in PIXEL_UPSCALERS:
        return PIXEL_UPSCALERS[name].value
    if name in registry.upscalers:
        return name
    known = ", ".join([*PIXEL_UPSCALERS, *sorted(registry.upscalers)])
    _refuse(("upscaler_1",), f"upscaler_1 {name!r} is not available here; use one of {known}")
    raise AssertionError  # _refuse raised


def _size(picture: str, loc: Loc) -> tuple[int, int]:
    """The picture's size from its header (admission decodes it, and says what is wrong with a
    file that is none)."""
    data = picture.partition(",")[2] if picture.startswith("data:") else picture
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            width, height = image.size
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError, DecompressionBombError):
        return _SIDES[0], _SIDES[0]  # admission's decode names the fault
    low, high = _SIDES
    if not (low <= width <= high and low <= height <= high):
        _refuse(loc, f"the picture is {width}x{height}; upscaling takes {low} to {high} pixels "
                "a side")  # fmt: skip
    return width, height


# Where an upscale job's fields stand in the Extras request.
_EXTRAS_FIELDS: dict[tuple[Any, ...], Loc] = {
    ("stages", 0, "scale"): ("upscaling_resize",),
    ("stages", 0, "width"): ("upscaling_resize_w",),
    ("stages", 0, "height"): ("upscaling_resize_h",),
    ("stages", 0, "upscaler"): ("upscaler_1",),
}


def _in_extras_terms(rejected: JobRejected, picture: Loc) -> JobRejected:
    """Admission's violations at the Extras request's fields (the picture's where the job's
    init image, size or budget is at fault)."""
    violations = []
    for v in rejected.violations:
        loc = _EXTRAS_FIELDS.get(v.loc, picture)
        violations.append(Violation(v.type, loc, v.msg, v.ctx))
    return JobRejected(violations)


def _refuse(loc: Loc, msg: str) -> None:
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}]
    )
