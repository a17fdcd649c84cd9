"""What a VAE file shows of the latent space it decodes: its channels always, the space itself
only where a config says it.

A VAE *is* a latent space, but its weights do not name one: SD1.5's and SDXL's VAEs have the
same shapes (4 channels), so do Flux's and SD3's (16). What a header does show is the channel
count, as the input of the decoder's first convolution (`decoder.conv_in.weight`: out, channels,
3, 3), under the same name in LDM's layout (A1111's `sdxl_vae.safetensors`) and diffusers',
bare or under a checkpoint's prefix (`first_stage_model.`, `vae.`). A diffusers folder's
`config.json` tells the rest: its scaling and shift factors are the latent space's own.

The registry writes each file's latent space; one whose channels contradict it is refused when
the registry loads (`contract.registry`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.latent_spaces import LATENT_SPACES, LatentSpaceName
from contract.safetensors_header import read_header

_DECODER_INPUT = "decoder.conv_in.weight"
PREFIXES = ("", "first_stage_model.", "vae.")
_CONFIG = "config.json"
_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class VaeProbe:
    """What a VAE's files show: its channels, and its latent space where a config tells."""

    channels: int
    latent_space: LatentSpaceName | None = None


def vae_channels(header: dict[str, Any]) -> int | None:
    """The latent channels a VAE's header shows, or None where it holds no VAE decoder."""
    for prefix in PREFIXES:
        shape = (header.get(prefix + _DECODER_INPUT) or {}).get("shape") or []
        if len(shape) == 4:
            return int(shape[1])
    return None


def space_of_config(config: dict[str, Any]) -> LatentSpaceName | None:
    """The latent space whose channels, scaling and shift a diffusers VAE config has."""
    channels = config.get("latent_channels")
    scaling, shift = config.get("scaling_factor"), config.get("shift_factor")
    for space in LATENT_SPACES.values():
        if (
            space.channels == channels
            and scaling is not None
            and abs(space.scaling_factor - scaling) < 1e-4
            and (space.shift_factor or 0.0) == (shift or 0.0)
        ):
            return space.name
    return None


def probe_vae(path: Path) -> VaeProbe | None:
    """What the VAE at `path` shows (a safetensors file or a diffusers folder), or None where
    it is not readable here or holds no VAE."""
    if path.is_dir():
        config_file = path / _CONFIG
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(config, dict) or not isinstance(config.get("latent_channels"), int):
            return None
        return VaeProbe(config["latent_channels"], space_of_config(config))
    header = read_header(path) if path.is_file() else None
    channels = None if header is None else vae_channels(header)
    return None if channels is None else VaeProbe(channels)


def weights_file(path: Path) -> Path:
    """The file whose hash names a VAE (A1111's `VAE hash`): the file, or a folder's weights."""
    return path / _WEIGHTS if path.is_dir() else path
