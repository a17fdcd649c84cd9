"""Which architecture a LoRA file was trained for, told from its header; LoRA folders.

A LoRA's keys name the layers it adapts and its shapes give their widths, whatever the layout
(kohya's `lora_unet_…_attn2_to_k.lora_down.weight`, diffusers' `unet.….attn2.to_k.lora.down`,
PEFT's `….lora_A.weight`). What marks each architecture is its row's `lora_keys`
(`contract.architectures`): the transformers' block names (Flux's `double_blocks`, SD3.5's
`joint_blocks`, Chroma's `distilled_guidance_layer`), for the UNets the width a cross-attention
key projects from, which is the text encoders' width (768 SD1.x, 2048 SDXL base, 1280 refiner),
and a second text encoder's layers for SDXL.

The gateway reads these headers at start-up (a few KB each): it refuses a LoRA on a stage of
another architecture before anything is queued.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from contract.architectures import ARCHITECTURES, most_specific_first
from contract.names import MODEL_NAME
from contract.safetensors_header import read_header

log = logging.getLogger("imagegen.registry")

# a LoRA's down/A matrix: (rank, in_features)
_DOWN = re.compile(r"(lora_down|lora_a|lora\.down)\.weight$")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k")
_SECOND_TEXT_ENCODER = ("lora_te2_", "text_encoder_2")


def lora_architecture(header: dict[str, Any]) -> str | None:
    """The architecture a LoRA's header shows, or None where its keys do not tell."""
    keys = [k for k in header if k != "__metadata__"]
    flat = [k.lower() for k in keys]
    rows = most_specific_first()
    for arch in rows:
        if any(name in k for k in flat for name in arch.lora_keys.block_names):
            return arch.name
    widths = {
        a.lora_keys.cross_attention_width: a.name for a in rows if a.lora_keys.cross_attention_width
    }
    for key, low in zip(keys, flat, strict=True):
        if _CROSS_ATTENTION_KEY.search(low) and _DOWN.search(low):
            shape = header[key].get("shape") or []
            found = widths.get(shape[-1]) if len(shape) == 2 else None
            if found is not None:
                return found
    if any(mark in k for k in flat for mark in _SECOND_TEXT_ENCODER):
        return next(a.name for a in rows if a.lora_keys.second_text_encoder)
    return None


def fits_declared(probed: str, declared: str) -> bool:
    """Whether a LoRA whose keys show `probed` may be the `declared` architecture's: the same
    one, or one derived from it, whose LoRAs may show only the names they share (a Chroma LoRA
    that adapts attention alone reads as Flux's)."""
    return probed == declared or ARCHITECTURES[declared].derived_from == probed


def probe_lora(path: Path) -> str | None:
    header = read_header(path)
    return None if header is None else lora_architecture(header)


def discover_loras(folder: Path) -> dict[str, dict[str, Any]]:
    """Registry entries for the LoRA files in `folder` (named by their file names, as A1111 names
    them in `<lora:name:weight>`), each with the architecture its header shows. Files whose
    architecture or name does not fit are left out, with a warning naming why."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        if not MODEL_NAME.match(path.stem):
            log.warning("LoRA %s left out: its name must match %s", path, MODEL_NAME.pattern)
            continue
        architecture = probe_lora(path)
        if architecture is None:
            log.warning(
                "LoRA %s left out: its keys do not show its architecture; list it in the "
                "registry's loras section with architecture: …",
                path,
            )
            continue
        found[path.stem] = {"name": path.stem, "file": path, "architecture": architecture}
    return found
