"""Loading a registered VAE to stand in for a model's own.

A VAE file holds weights only; its structure is its latent space's, which is the model's own
VAE's (the rule, `contract.vaes`, has made sure): so a file is built on the model's VAE config
(its scaling and shift are the latent space's) and its weights taken as they are, in diffusers'
layout, or LDM's converted by diffusers' own converter. A diffusers folder brings its config.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from contract.registry import VaeEntry
from contract.vae_files import PREFIXES
from workers.models.weights import check_fit

# Keys only LDM's layout has (diffusers names these down_blocks / mid_block).
_LDM_MARKS = ("encoder.down.0.", "encoder.mid.block_1.")


@dataclass
class LoadedVae:
    entry: VaeEntry
    vae: AutoencoderKL
    param_bytes: int
    last_used: float = field(default_factory=time.monotonic)


def load_vae(entry: VaeEntry, like: AutoencoderKL, device: str, dtype: torch.dtype) -> LoadedVae:
    """`entry`'s VAE on `device` in `dtype`, shaped as `like` (the model's own) where its file
    does not say. Raises ValueError for a file that does not fit that shape."""
    if entry.file.is_dir():
        vae = AutoencoderKL.from_pretrained(
            str(entry.file), torch_dtype=dtype, local_files_only=True
        )
    else:
        weights = _unprefixed(load_file(str(entry.file)))
        if any(k.startswith(_LDM_MARKS) for k in weights):
            weights = convert_ldm_vae_checkpoint(weights, dict(like.config))
        with torch.device("meta"):
            vae = AutoencoderKL.from_config(like.config)
        missing, unexpected = vae.load_state_dict(weights, strict=False, assign=True)
        check_fit(missing, unexpected, f"{entry.file.name} does not fit the model's VAE")
    if vae.config.latent_channels != like.config.latent_channels:
        raise ValueError(
            f"{entry.file.name} decodes {vae.config.latent_channels}-channel latents; the model's "
            f"VAE, {like.config.latent_channels}"
        )
    vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
    size = sum(t.numel() * t.element_size() for t in (*vae.parameters(), *vae.buffers()))
    return LoadedVae(entry, vae, size)


def _unprefixed(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE's tensors of a file that keeps them under a checkpoint's prefix, bare."""
    for prefix in PREFIXES[1:]:
        if any(k.startswith(prefix) for k in weights):
            return {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    return weights
