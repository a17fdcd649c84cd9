"""SD3.5: an MMDiT with three text encoders and classifier-free guidance. diffusers reads its
single files; a GGUF transformer (`read_transformer_gguf`, city96's `sd3.5_large-Q8_0.gguf`)
is read here and stays quantized."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import (
    DiffusionPipeline,
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
)
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

from contract.registry import ModelEntry, SingleFileSource
from workers.families import Pipelines
from workers.families.gguf_files import assign_quantized, read_gguf


def read_transformer_gguf(
    entry: ModelEntry,
    source: SingleFileSource,
    cls: type[DiffusionPipeline],
    dtype: torch.dtype,
    given: dict[str, torch.nn.Module],
) -> DiffusionPipeline:
    """A pipeline whose transformer is a GGUF file's (the MMDiT under its original names, as
    Stability ships it, with or without `model.diffusion_model.`), kept quantized: each linear
    layer whose matrix the file quantized dequantizes it per forward. The text encoders and VAE
    come from the config folder."""
    path, config = source.single_file, str(source.config)
    # diffusers' own converter: it splits each fused qkv matrix into three along its rows and
    # swaps the final modulation's halves, both of which keep a quantized matrix's blocks whole
    # (each row is quantized on its own, and a GGUFParameter keeps its type through the split).
    converted = convert_sd3_transformer_checkpoint_to_diffusers(read_gguf(path, dtype))
    with init_empty_weights():
        transformer = SD3Transformer2DModel.from_config(
            SD3Transformer2DModel.load_config(config, subfolder="transformer")
        )
    assign_quantized(transformer, converted, dtype, f"the transformer in {path.name}")
    return cls.from_pretrained(
        config, transformer=transformer, torch_dtype=dtype, local_files_only=True, **given
    )


def mmdit_names(weights: dict[str, torch.Tensor], config: Path) -> dict[str, torch.Tensor]:
    """An MMDiT's weights (Stability's names) under diffusers' names."""
    return convert_sd3_transformer_checkpoint_to_diffusers(dict(weights))


PIPELINES = {
    "sd35": Pipelines(
        StableDiffusion3Pipeline, StableDiffusion3Img2ImgPipeline, SD3Transformer2DModel,
        "transformer", guidance="halves", image_takes_size=True,
        inpaint=StableDiffusion3InpaintPipeline, reads_gguf=True, read_gguf=read_transformer_gguf,
        scaled_names=mmdit_names,
    ),
}  # fmt: skip
