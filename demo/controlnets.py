"""Tiny ControlNets for the demo models, made as trainers start them, from their models' own
denoisers (diffusers' `ControlNetModel.from_unet`, `FluxControlNetModel.from_transformer`), with
the zero-initialized layers a training run would have taught given random weights instead, so
that they change the picture. Saved as diffusers folders.

Their widths are the demo encoders' (32), which show no real architecture: the UNet ones' configs
name their cross-attention width, which the registry checks against the row; the demo registry
writes each architecture.

`python -m demo.models build` makes them into its `demo-controlnets` folder: demo-sd15-canny,
demo-sdxl-canny, demo-flux-canny."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    ControlNetModel,
    FluxControlNetModel,
    FluxTransformer2DModel,
    UNet2DConditionModel,
)


def build_demo_controlnets(demo_models: Path, out: Path) -> None:
    """The demo registry's ControlNets, into `out`, from the demo models built under it."""
    torch.manual_seed(31)
    for model in ("demo-sd15", "demo-sdxl"):
        unet = UNet2DConditionModel.from_pretrained(demo_models / model / "unet")
        # Three downsamplings, as real ones have: the control map meets latents 8x smaller.
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=(8, 8, 16, 16)
        )
        _taught(controlnet, ("controlnet_down_blocks", "controlnet_mid_block",
                             "controlnet_cond_embedding.conv_out"))  # fmt: skip
        controlnet.save_pretrained(out / f"{model}-canny")
    transformer = FluxTransformer2DModel.from_pretrained(demo_models / "demo-flux" / "transformer")
    config = transformer.config
    flux = FluxControlNetModel.from_transformer(
        transformer, num_layers=1, num_single_layers=1,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
    )  # fmt: skip
    _taught(flux, ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder"))
    flux.save_pretrained(out / "demo-flux-canny")


def _taught(module: torch.nn.Module, zeroed: tuple[str, ...]) -> None:
    """Random weights where a fresh ControlNet has zeros (its output projections)."""
    for name, parameter in module.named_parameters():
        if name.startswith(zeroed):
            with torch.no_grad():
                parameter.normal_(0.0, 0.5)
