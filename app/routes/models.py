from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import RegistryDep

router = APIRouter(tags=["models"])


class LatentSpaceInfo(BaseModel):
    name: str
    channels: int
    vae_downscale: int
    scaling_factor: float
    shift_factor: float | None
    packed_2x2: bool


class ModelInfo(BaseModel):
    name: str
    architecture: str
    latent_space: LatentSpaceInfo
    size_multiple: int
    text_to_image: bool
    negative_prompt: bool
    guidance_range: tuple[float, float]
    default_steps: int


@router.get("/models", operation_id="list_models")
def list_models(registry: RegistryDep) -> list[ModelInfo]:
    """Registered models, with the latent space each works in (which decides latent handoffs)."""
    out = []
    for name in registry.names():
        entry = registry.models[name]
        arch = entry.arch
        out.append(
            ModelInfo(
                name=name,
                architecture=arch.name,
                latent_space=LatentSpaceInfo(**entry.latent_space.as_ctx()),
                size_multiple=arch.size_multiple,
                text_to_image=arch.text_to_image,
                negative_prompt=arch.negative_prompt,
                guidance_range=arch.guidance_range,
                default_steps=arch.default_steps,
            )
        )
    return out
