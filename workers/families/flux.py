"""Flux: a guidance-distilled (dev) or timestep-distilled (schnell) transformer on latents packed
2x2. Its single files are read by `flux_files` (diffusers' reader takes only the released width
and breaks on all-in-one files), and the registry's variant is checked against the weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    DiffusionPipeline,
    FluxControlNetImg2ImgPipeline,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.models.controlnets.controlnet_flux import FluxMultiControlNetModel

from contract.registry import ModelEntry, SingleFileSource
from workers.families import ArchitectureMismatch, ControlNetPipelines, Pipelines
from workers.families.flux_files import bfl_names, file_keys, load_flux_file


def _variant_of_config(transformer_config: dict[str, object]) -> str:
    # dev embeds the guidance scale; schnell has no guidance embedding.
    return "dev" if transformer_config.get("guidance_embeds") else "schnell"


def _with_or_without(variant: str) -> str:
    return "with" if variant == "dev" else "without"


def check_variant(entry: ModelEntry, pipe: DiffusionPipeline) -> None:
    """The registry's `variant` against the weights (FLUX.1 Fill's transformer takes the masked
    picture's latents and the mask beside the packed latents: more input than output)."""
    config = pipe.transformer.config
    fill = config.in_channels != (config.out_channels or config.in_channels)
    if fill != (entry.variant == "fill"):
        said = "is FLUX.1 Fill" if fill else f"is not FLUX.1 Fill ({config.in_channels} inputs)"
        raise ArchitectureMismatch(
            f"{entry.name!r}'s transformer {said}, but the registry says "
            f"{entry.variant or 'no variant'}; "
            + ("register it with variant: fill" if fill else "drop variant: fill")
        )
    if entry.variant in (None, "fill"):
        return
    loaded = _variant_of_config(dict(config))
    if loaded != entry.variant:
        raise ArchitectureMismatch(
            f"the registry says Flux {entry.variant}, but the weights are Flux {loaded} "
            f"({_with_or_without(loaded)} guidance embeddings); fix the entry's variant"
        )


def _check_file_against_config(path: Path, config: Path) -> None:
    """A Flux file and its config folder must be the same variant: dev weights with a schnell
    config lose their guidance weights silently; schnell weights with a dev config fail with a
    meta-tensor error that names neither."""
    guided = any("guidance_in." in k or "guidance_embedder" in k for k in file_keys(path))
    in_file = "dev" if guided else "schnell"
    settings = config / "transformer" / "config.json"
    if not settings.is_file():
        return
    in_config = _variant_of_config(json.loads(settings.read_text()))
    if in_file != in_config:
        raise ArchitectureMismatch(
            f"{path.name} is a Flux {in_file} checkpoint ({_with_or_without(in_file)} guidance "
            f"embeddings), but its config folder {config} is for Flux {in_config}; point config "
            f"at a {in_file} folder"
        )


def read_single_file(
    entry: ModelEntry,
    source: SingleFileSource,
    cls: type[DiffusionPipeline],
    dtype: torch.dtype,
    given: dict[str, torch.nn.Module],
) -> DiffusionPipeline:
    _check_file_against_config(source.single_file, source.config)
    return load_flux_file(source.single_file, source.config, cls, dtype, given)


PIPELINES = {
    "flux": Pipelines(
        FluxPipeline, FluxImg2ImgPipeline, FluxTransformer2DModel, "transformer",
        guidance="input", image_takes_size=True, read_single_file=read_single_file,
        inpaint=FluxInpaintPipeline, fill=FluxFillPipeline,
        scaled_names=bfl_names, reads_gguf=True, reads_four_bit=True,
        check_weights=check_variant,
        controlnet=ControlNetPipelines(
            FluxControlNetPipeline, FluxControlNetImg2ImgPipeline, FluxControlNetModel,
            FluxMultiControlNetModel, text_image_arg="control_image", several_need_modes=True,
        ),
    ),
}  # fmt: skip
