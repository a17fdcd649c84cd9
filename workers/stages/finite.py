"""No NaN picture: a stage's output is checked before it becomes pictures.

Pipelines hand pictures over as float tensors (`output_type="pt"`), where NaN survives; as PIL it
turns black. A non-finite decode is done again with the VAE in fp32 (A1111's answer to the fp16
SDXL VAE); NaN/Inf latents, or pixels still not finite, fail the stage `non_finite_output`.
"""

from __future__ import annotations

import logging

import torch
from diffusers import DiffusionPipeline, FluxPipeline
from PIL import Image

from contract.envelope import FailureType
from workers.models.cache import LoadedModel
from workers.stages.errors import StageError

log = logging.getLogger("imagegen.worker")


def finite_pictures(
    pipe: DiffusionPipeline,
    images: torch.Tensor,
    latents: torch.Tensor | None,
    i: int,
    model: LoadedModel,
    size: tuple[int, int],
) -> tuple[list[Image.Image], bool]:
    """The stage's pictures, never from NaN/Inf: a non-finite decode is done again in fp32 (an
    fp16 VAE overflows where fp32 does not); if the latents themselves are not finite, or fp32
    does not help either, the stage fails `non_finite_output`. Returns whether it decoded
    again."""
    if torch.isfinite(images).all():
        return _pil(pipe, images), False
    if latents is None or not torch.isfinite(latents).all():
        raise non_finite(i, model, "latents")
    log.warning("stage %d: %s decoded NaN/Inf pixels; decoding again in fp32", i, model.entry.name)
    images = _decode_in_fp32(pipe, latents, size, model.entry.latent_space.packed_2x2)
    if not torch.isfinite(images).all():
        raise non_finite(i, model, "pixels, also when decoded again in fp32,")
    return _pil(pipe, images), True


def non_finite(i: int, model: LoadedModel, what: str) -> StageError:
    return StageError(
        FailureType.NON_FINITE_OUTPUT,
        f"stage {i}: {model.entry.name!r} produced NaN or infinite {what} — no picture to give; "
        "its weights may be broken or overflow at this dtype (try dtype fp32 or bf16 in the "
        "registry)",
    )


def _pil(pipe: DiffusionPipeline, images: torch.Tensor) -> list[Image.Image]:
    # What diffusers' own output_type="pil" does with the same tensor.
    processor = pipe.image_processor
    return list(processor.numpy_to_pil(processor.pt_to_numpy(images)))


def _decode_in_fp32(
    pipe: DiffusionPipeline, latents: torch.Tensor, size: tuple[int, int], packed: bool
) -> torch.Tensor:
    """Decode the last step's latents as the pipeline does, with the VAE in fp32 for once."""
    vae = pipe.vae
    config = vae.config
    if packed:  # Flux's latent space: 2x2 patches per token
        width, height = size
        latents = FluxPipeline._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    latents = latents.float()
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        mean_t, std_t = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
        latents = latents * std_t / config.scaling_factor + mean_t
    else:
        latents = latents / config.scaling_factor
    if getattr(config, "shift_factor", None) is not None:
        latents = latents + config.shift_factor
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        with torch.no_grad():
            image = vae.decode(latents.to(vae.device), return_dict=False)[0]
    finally:
        vae.to(dtype)
    decoded: torch.Tensor = pipe.image_processor.postprocess(image, output_type="pt")
    return decoded
