"""Telling a single-file checkpoint's architecture from its header, before loading any weight.

`safe_open(...).keys()` reads only the safetensors header (well under a millisecond on a 2 GB
file), and a few keys identify each architecture (the keys diffusers' single-file loader uses).
A registry entry whose declared architecture contradicts its file fails with a clear reason at
load time, instead of producing garbage or a shape error mid-job.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

# architecture -> keys, any of which marks a checkpoint of it (original and diffusers layouts)
_MARKERS: dict[str, tuple[str, ...]] = {
    "sdxl": ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",),
    "sdxl-refiner": ("conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias",),
    "flux": (
        "double_blocks.0.img_attn.norm.key_norm.scale",
        "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale",
        "single_transformer_blocks.0.attn.norm_k.weight",
    ),
    "sd15": ("model.diffusion_model.output_blocks.11.0.skip_connection.weight",),
}


def probe_architecture(path: Path) -> str | None:
    """The architecture the file's keys show, or None if they match none we know."""
    if path.suffix != ".safetensors":
        return None
    with safe_open(str(path), "pt") as handle:
        keys = set(handle.keys())
    for architecture, markers in _MARKERS.items():
        if any(marker in keys for marker in markers):
            return architecture
    return None
