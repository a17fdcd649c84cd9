"""Tiny VAEs for the demo models: one per 4-channel latent space, each with its space's shapes
and its own random weights (so it changes the picture), in the two layouts VAE files ship in.

`demo-sd15-vae.safetensors` (latent space sd1) is in diffusers' layout, `demo-sdxl-vae.safetensors`
(sdxl) in LDM's, as A1111's `sdxl_vae.safetensors` is. Their shapes do not tell which latent
space they decode (SD1.5's VAE and SDXL's have the same ones): the demo registry writes it.

`python -m demo.models build` makes them into its `demo-vaes` folder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from demo.layouts import diffusers_vae_to_ldm


def build_demo_vaes(demo_models: Path, out: Path) -> None:
    """The demo registry's VAEs, into `out`, shaped as the demo models' own VAEs."""
    build_vae(demo_models / "demo-sd15", out / "demo-sd15-vae.safetensors", seed=11)
    build_vae(demo_models / "demo-sdxl", out / "demo-sdxl-vae.safetensors", seed=12, ldm=True)


def build_vae(model: Path, out: Path, seed: int, ldm: bool = False) -> Path:
    """A VAE shaped as `model`'s own, with other random weights, written to `out` in diffusers'
    layout or LDM's."""
    config = AutoencoderKL.load_config(model / "vae")
    torch.manual_seed(seed)
    weights = AutoencoderKL.from_config(config).state_dict()
    if ldm:
        weights = diffusers_vae_to_ldm(weights, levels=len(config["down_block_types"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, out)
    return out
