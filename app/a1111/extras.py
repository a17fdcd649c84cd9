"""The rest of A1111's API that its clients call to fill their menus and check the server
(webuiapi, SillyTavern, Open WebUI, Forge's clients): lists of what this service has (its
LoRAs, its upscaler models), honest empty lists for what it has none of (styles, face
restorers, hypernetworks, Forge's separate modules: each registered model brings its own
encoders and VAE), the refresh calls (the registry is read at start: nothing to refresh),
`png-info` (reads A1111's `parameters` text back), and `interrogate`, which is not served and
says so (501 `not_served`)."""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from app.a1111.infotext import parse_parameters
from app.deps import RegistryDep
from app.errors import ErrorBody, NotServed, documented
from app.keys import A1111CallerDep

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"], responses=documented(401, 503))
# A1111's refresh calls answer JSON null.
_NULL: dict[int | str, dict[str, Any]] = {200: {"description": "Done: A1111's answer, null.",
               "content": {"application/json": {"schema": {"type": "null"}}}}}  # fmt: skip


class LoraItem(BaseModel):
    name: str = Field(description="As a prompt's `<lora:name:weight>`.")
    alias: str
    path: str
    metadata: dict[str, Any]


class ModuleItem(BaseModel):
    model_name: str
    filename: str


class StyleItem(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: str | None


class HypernetworkItem(BaseModel):
    name: str
    path: str | None


class RealesrganItem(BaseModel):
    name: str
    path: str | None
    scale: int | None


class MemoryResponse(BaseModel):
    ram: dict[str, Any] = Field(description="The gateway host's memory, in bytes.")
    cuda: dict[str, Any] = Field(
        description="The gateway holds no GPU (`error` says so); each worker's resident bytes "
        "are in GET /readyz and /metrics."
    )


class PngInfoRequest(BaseModel):
    image: str = Field(description="Base64 PNG (a data URL too).")


class PngInfoResponse(BaseModel):
    info: str = Field(description="Its `parameters` text, as written.")
    items: dict[str, Any] = Field(description="Its other text chunks.")
    parameters: dict[str, Any] = Field(description="The `parameters` text read back, by field.")


@router.get("/loras", operation_id="a1111_loras")
async def loras(_: A1111CallerDep, registry: RegistryDep) -> list[LoraItem]:
    """The registered LoRAs (every architecture's; GET /loras says which each is for)."""
    return [
        LoraItem(name=n, alias=n, path=str(e.file), metadata={"architecture": e.architecture})
        for n, e in sorted(registry.loras.items())
    ]


@router.get("/realesrgan-models", operation_id="a1111_realesrgan_models")
async def realesrgan_models(_: A1111CallerDep, registry: RegistryDep) -> list[RealesrganItem]:
    """The registered upscaler models (the worker reads each one's scale from its weights)."""
    return [
        RealesrganItem(name=n, path=str(e.file), scale=None)
        for n, e in sorted(registry.upscalers.items())
    ]


@router.get("/sd-modules", operation_id="a1111_sd_modules")
async def sd_modules(_: A1111CallerDep) -> list[ModuleItem]:
    """Forge's separate text encoders and VAEs: none apart here (each model brings its own;
    registered VAEs are in /sdapi/v1/sd-vae)."""
    return []


@router.get("/prompt-styles", operation_id="a1111_prompt_styles")
async def prompt_styles(_: A1111CallerDep) -> list[StyleItem]:
    """No saved styles here."""
    return []


@router.get("/face-restorers", operation_id="a1111_face_restorers")
async def face_restorers(_: A1111CallerDep) -> list[FaceRestorerItem]:
    """No face restorers here (`restore_faces` is accepted and ignored)."""
    return []


@router.get("/hypernetworks", operation_id="a1111_hypernetworks")
async def hypernetworks(_: A1111CallerDep) -> list[HypernetworkItem]:
    """No hypernetworks here."""
    return []


@router.get("/memory", operation_id="a1111_memory")
async def memory(_: A1111CallerDep) -> MemoryResponse:
    """The gateway host's RAM; no GPU here."""
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    free = page * os.sysconf("SC_AVPHYS_PAGES")
    total = page * pages
    return MemoryResponse(
        ram={"free": free, "used": total - free, "total": total},
        cuda={"error": "the gateway holds no GPU; the workers' memory is in GET /metrics"},
    )


@router.get("/cmd-flags", operation_id="a1111_cmd_flags")
async def cmd_flags(_: A1111CallerDep) -> dict[str, Any]:
    """The flags clients check: an API server without A1111's web UI."""
    return {"api": True, "nowebui": True, "listen": True}


@router.post("/refresh-checkpoints", operation_id="a1111_refresh_checkpoints", responses=_NULL)
async def refresh_checkpoints(_: A1111CallerDep) -> None:
    """Nothing to refresh: the registry is read when the service starts."""


@router.post("/refresh-loras", operation_id="a1111_refresh_loras", responses=_NULL)
async def refresh_loras(_: A1111CallerDep) -> None:
    """Nothing to refresh: the registry is read when the service starts."""


@router.post("/refresh-vae", operation_id="a1111_refresh_vae", responses=_NULL)
async def refresh_vae(_: A1111CallerDep) -> None:
    """Nothing to refresh: the registry is read when the service starts."""


@router.post("/png-info", operation_id="a1111_png_info", responses=documented(400, 413, 422))
def png_info(_: A1111CallerDep, body: PngInfoRequest) -> PngInfoResponse:  # a thread, not the loop
    """A PNG's A1111 `parameters` text, and the fields A1111 reads from it."""
    data = body.image.partition(",")[2] if body.image.startswith("data:") else body.image
    try:
        picture = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    except (binascii.Error, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        raise RequestValidationError(
            [{"type": "invalid_image", "loc": ("body", "image"), "input": None,
              "msg": "image is not a base64 PNG (or JPEG); send the picture's bytes in base64"}]
        ) from None  # fmt: skip
    chunks = {k: v for k, v in picture.info.items() if isinstance(v, str)}
    info = chunks.pop("parameters", "")
    return PngInfoResponse(
        info=info, items=chunks, parameters=parse_parameters(info) if info else {}
    )


@router.post(
    "/interrogate",
    operation_id="a1111_interrogate",
    status_code=501,
    response_model=ErrorBody,
    responses=documented(501),
)
async def interrogate(_: A1111CallerDep) -> ErrorBody:
    """Not served: no captioning model (CLIP interrogator, DeepDanbooru) runs here."""
    raise NotServed(
        "interrogate is not served here: no captioning model (CLIP interrogator, DeepDanbooru) "
        "runs on this service"
    )
