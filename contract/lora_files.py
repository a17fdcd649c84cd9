"""Which architecture a LoRA file was trained for, told from its header; LoRA folders.

A LoRA's keys name the layers it adapts and its shapes give their widths, whatever the layout
(kohya's `lora_unet_…_attn2_to_k.lora_down.weight`, diffusers' `unet.….attn2.to_k.lora.down`,
PEFT's `….lora_A.weight`):

- Flux: BFL's block names (`double_blocks`, `single_blocks`), or diffusers'
  `single_transformer_blocks`;
- SD3.5: MMDiT's `joint_blocks`;
- SD1.5 / SDXL / SDXL refiner: the width a cross-attention key projects from, which is the text
  encoders' width: 768 (SD1.x), 2048 (SDXL base: CLIP-L and CLIP-G side by side), 1280 (refiner:
  CLIP-G alone); a second text encoder's layers (`lora_te2_`, `text_encoder_2`) mean SDXL.

The gateway reads these headers at start-up (a few KB each): it refuses a LoRA on a stage of
another architecture before anything is queued.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from contract.safetensors_header import read_header

log = logging.getLogger("imagegen.registry")

_FLUX_BLOCKS = ("double_blocks", "single_blocks", "single_transformer_blocks")
_CROSS_ATTENTION_WIDTHS = {768: "sd15", 2048: "sdxl", 1280: "sdxl-refiner"}
# a LoRA's down/A matrix: (rank, in_features)
_DOWN = re.compile(r"(lora_down|lora_a|lora\.down)\.weight$")
_CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def lora_architecture(header: dict[str, Any]) -> str | None:
    """The architecture a LoRA's header shows, or None where its keys do not tell."""
    keys = [k for k in header if k != "__metadata__"]
    flat = [k.lower() for k in keys]
    if any(
        m in k
        for k in flat
        for m in ("double_blocks", "single_blocks", "single_transformer_blocks")
    ):
        return "flux"
    if any("joint_blocks" in k for k in flat):
        return "sd35"
    for key, low in zip(keys, flat, strict=True):
        if _CROSS_ATTENTION_KEY.search(low) and _DOWN.search(low):
            shape = header[key].get("shape") or []
            found = _CROSS_ATTENTION_WIDTHS.get(shape[-1]) if len(shape) == 2 else None
            if found is not None:
                return found
    if any("lora_te2_" in k or "text_encoder_2" in k for k in flat):
        return "sdxl"
    return None


def probe_lora(path: Path) -> str | None:
    header = read_header(path)
    return None if header is None else lora_architecture(header)


def discover_loras(folder: Path) -> dict[str, dict[str, Any]]:
    """Registry entries for the LoRA files in `folder` (named by their file names, as A1111 names
    them in `<lora:name:weight>`), each with the architecture its header shows. Files whose
    architecture or name does not fit are left out, with a warning naming why."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        if not NAME_PATTERN.match(path.stem):
            log.warning("LoRA %s left out: its name must match %s", path, NAME_PATTERN.pattern)
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
