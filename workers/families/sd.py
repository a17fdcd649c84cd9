"""Stable Diffusion 1.5, SDXL and the SDXL refiner: UNets with classifier-free guidance. Their
single files load with diffusers' own reader, but a GGUF UNet (`read_unet_gguf`: its linear
layers stay quantized), the refiner's too; SD1.5's and SDXL's ControlNets are UNet encoders."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import (
    ControlNetModel,
    DiffusionPipeline,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from contract.registry import ModelEntry, SingleFileSource
from workers.families import ArchitectureMismatch, ControlNetPipelines, Pipelines
from workers.families.gguf_files import assign_quantized, read_gguf, shape_of, tensor_names

# Where LDM checkpoints (A1111's, and GGUF files converted from them) keep the UNet.
_LDM_UNET = "model.diffusion_model."


def read_unet_gguf(
    entry: ModelEntry,
    source: SingleFileSource,
    cls: type[DiffusionPipeline],
    dtype: torch.dtype,
    given: dict[str, torch.nn.Module],
) -> DiffusionPipeline:
    """A pipeline whose UNet is a GGUF file's (under LDM's names, with or without the
    `model.diffusion_model.` prefix, as converted from an A1111 checkpoint), kept quantized: each
    linear layer whose matrix the file quantized dequantizes it per forward, the convolutions
    (which GGUF converters keep wide) are read in `dtype`. The text encoders and VAE come from
    the config folder."""
    path, config = source.single_file, str(source.config)
    prefix = _LDM_UNET if any(n.startswith(_LDM_UNET) for n in tensor_names(path)) else ""
    weights = {_LDM_UNET + k: v for k, v in read_gguf(path, dtype, prefix).items()}
    unet_config = UNet2DConditionModel.load_config(config, subfolder="unet")
    # Renames only (no tensor is split or joined): a quantized matrix keeps its blocks.
    converted = convert_ldm_unet_checkpoint(weights, unet_config)
    if entry.architecture == "sdxl-refiner":
        _check_refiner(converted, unet_config, path.name)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
    assign_quantized(unet, converted, dtype, f"the UNet in {path.name}")
    return cls.from_pretrained(config, unet=unet, torch_dtype=dtype, local_files_only=True, **given)


def ldm_unet_names(weights: dict[str, torch.Tensor], config: Path) -> dict[str, torch.Tensor]:
    """An LDM UNet's weights (without `model.diffusion_model.`) under diffusers' names."""
    unet_config = UNet2DConditionModel.load_config(str(config), subfolder="unet")
    return convert_ldm_unet_checkpoint({_LDM_UNET + k: v for k, v in weights.items()}, unet_config)


def _check_refiner(weights: dict[str, torch.Tensor], unet_config: dict, name: str) -> None:
    """A GGUF file named `sdxl` (as city96's converter names the refiner too) against the
    refiner's config: the refiner's added conditioning holds 5 time ids, the base UNet's 6."""
    width = shape_of(weights["add_embedding.linear_1.weight"])[1]
    expected = unet_config["projection_class_embeddings_input_dim"]
    if width != expected:
        raise ArchitectureMismatch(
            f"{name} conditions on {width} added features, the refiner's UNet in the config "
            f"folder on {expected}: it is an SDXL base UNet (GGUF files name both sdxl); "
            "register it as sdxl"
        )


def check_inpainting(entry: ModelEntry, pipe: DiffusionPipeline) -> None:
    """The registry's `variant: inpainting` against the UNet: 9 input channels (latents, mask,
    masked picture) or 4."""
    channels = pipe.unet.config.in_channels
    if entry.inpainting and channels != 9:
        raise ArchitectureMismatch(
            f"the registry says {entry.name!r} is an inpainting checkpoint, but its UNet takes "
            f"{channels} channels, not 9; drop variant: inpainting"
        )
    if not entry.inpainting and channels == 9:
        raise ArchitectureMismatch(
            f"{entry.name!r}'s UNet takes 9 channels: it is an inpainting checkpoint; register "
            "it with variant: inpainting (it runs as a masked first stage)"
        )


PIPELINES = {
    "sd15": Pipelines(
        StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves", inpaint=StableDiffusionInpaintPipeline, check_weights=check_inpainting,
        reads_gguf=True, read_gguf=read_unet_gguf, scaled_names=ldm_unet_names,
        controlnet=ControlNetPipelines(
            StableDiffusionControlNetPipeline, StableDiffusionControlNetImg2ImgPipeline,
            ControlNetModel, MultiControlNetModel, several_text="per_picture",
            several_image="shared",
        ),
    ),
    "sdxl": Pipelines(
        StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel, "unet",
        guidance="halves", inpaint=StableDiffusionXLInpaintPipeline,
        check_weights=check_inpainting, reads_gguf=True, read_gguf=read_unet_gguf,
        scaled_names=ldm_unet_names, controlnet=ControlNetPipelines(
            StableDiffusionXLControlNetPipeline, StableDiffusionXLControlNetImg2ImgPipeline,
            ControlNetModel, MultiControlNetModel, several_text="shared",
            several_image="shared",
        ),
    ),
    # The refiner starts from a picture or latents: its text pipeline is its img2img.
    "sdxl-refiner": Pipelines(
        StableDiffusionXLImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel,
        "unet", guidance="halves", inpaint=StableDiffusionXLInpaintPipeline, reads_gguf=True,
        read_gguf=read_unet_gguf, scaled_names=ldm_unet_names,
    ),
}  # fmt: skip
