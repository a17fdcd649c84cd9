"""Telling what a single-file checkpoint is from its header, before loading any weight.

A safetensors file starts with an 8-byte length and a JSON header naming every tensor, its dtype,
shape and byte range: reading it costs well under a millisecond on a 2 GB file, whatever the
file's extension (BFL ships Flux as `.sft`). A few keys identify each architecture (its row's
`checkpoint_keys`: the keys diffusers' single-file loader uses), so a registry entry whose
declared architecture contradicts its file fails with a clear reason at load time, and
`diagnose` says in a user's words what a file that cannot load is instead: a LoRA, an inpainting
UNet registered as an ordinary model, a scaled-fp8 file, a truncated download, or not
safetensors at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from contract.architectures import most_specific_first
from contract.safetensors_header import (
    SAFETENSORS_SUFFIXES,
    SCALE_SUFFIX,
    SCALED_FP8_MARKER,
    declared_header_length,
    header_with_length,
    read_header,
)
from workers.families.gguf_files import (
    damage,
    declared_architecture,
    is_gguf,
    tensor_names,
    unsupported_quantization,
)
from workers.families.nf4_files import four_bit_weights, missing_bitsandbytes


def probe_architecture(path: Path) -> str | None:
    """The architecture the file's keys show, or None if they match none we know."""
    if path.is_file() and is_gguf(path):
        if damage(path) is not None:
            return None  # `diagnose` says why
        declared = declared_architecture(path)
        if declared is not None:
            return declared
        header: dict[str, object] | None = dict.fromkeys(tensor_names(path))
    else:
        header = read_header(path)
    if header is None:
        return None
    for arch in most_specific_first():
        if any(key in header for key in arch.checkpoint_keys):
            return arch.name
    return None


# city96's converter names the SDXL refiner's UNet `sdxl` too (it tells architectures apart by
# keys the two share): such a file may be either, and its weights meet the config folder's.
_GGUF_ALSO = {"sdxl": ("sdxl-refiner",)}


def contradicting_architecture(path: Path, architecture: str) -> str | None:
    """The architecture the file's header shows where that is not `architecture`; None where it
    agrees or tells nothing."""
    found = probe_architecture(path)
    if found is None or found == architecture:
        return None
    if is_gguf(path) and architecture in _GGUF_ALSO.get(found, ()):
        return None
    return found


# kohya (lora_up/lora_down, lora_unet_, lora_te), PEFT (lora_A/lora_B), diffusers (lora.up/down)
_LORA_MARKS = (
    "lora_up", "lora_down", "lora_A", "lora_B", "lora_unet_", "lora_te", ".lora.up.", ".lora.down.",
)  # fmt: skip
_INPAINT_CONV_IN = (
    "model.diffusion_model.input_blocks.0.0.weight",
    "conv_in.weight",
)


def is_scaled_fp8(keys: Iterable[str]) -> bool:
    """ComfyUI's scaled fp8: its `scaled_fp8` marker, or a `<layer>.scale_weight` per layer (the
    stored fp8 weight times it is the weight)."""
    return any(key == SCALED_FP8_MARKER or key.endswith(SCALE_SUFFIX) for key in keys)


def diagnose(
    path: Path,
    reads_scaled_fp8: bool = False,
    reads_gguf: bool = False,
    inpainting: bool = False,
    reads_four_bit: bool = False,
) -> str | None:
    """Why a checkpoint file cannot be loaded, in a user's words; None if nothing is visibly
    wrong with it (the loader's own error then says more). `reads_scaled_fp8`: the loader
    multiplies a ComfyUI scaled-fp8 file's weights by their scales (Flux's does)."""
    if not path.is_file():
        return f"{path} does not exist (or is not a file)"
    if is_gguf(path):
        return _gguf_diagnosis(path, reads_gguf)
    size = path.stat().st_size
    declared = declared_header_length(path)
    if declared is not None and size < 8 + declared:
        return (
            f"{path.name} is truncated: it has {size} bytes, not even its {declared}-byte "
            "header; download it again"
        )
    found = header_with_length(path)
    if found is None:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            return f"{path.name} is not a safetensors file (its header does not parse)"
        return None
    length, header = found
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        return (
            f"{path.name} is truncated: it has {size} bytes, its header describes {needed}; "
            "download it again"
        )
    keys = [k for k in header if k != "__metadata__"]
    if any(mark in key for key in keys for mark in _LORA_MARKS):
        return f"{path.name} is a LoRA, not a checkpoint: it adapts a model, it cannot be one"
    if four_bit_weights(keys):  # Forge's NF4 files: each weight's bitsandbytes state beside it
        if not reads_four_bit:
            return (
                f"{path.name} is a bitsandbytes NF4/FP4 file (Forge's `bnb-nf4` layout), which "
                "this service reads for Flux only; use a bf16 file, or a plain fp8 one, which "
                "is kept in fp8"
            )
        missing = missing_bitsandbytes()
        if missing is not None:
            return (
                f"{path.name} is a bitsandbytes NF4/FP4 file (Forge's `bnb-nf4` layout): {missing}"
            )
    if not reads_scaled_fp8 and is_scaled_fp8(keys):
        return (
            f"{path.name} is a ComfyUI scaled-fp8 file, which is not supported for this "
            "architecture (SD1.5's, SDXL's, SD3.5's and Flux's are): its weights need their "
            "scales, which diffusers' loader ignores; use a bf16 or plain fp8 file without scales"
        )
    if not inpainting and is_inpainting_unet(header):
        return (
            f"{path.name} is an inpainting UNet (9 input channels); register it with "
            "variant: inpainting (it runs as a masked first stage)"
        )
    return None


def is_inpainting_unet(header: dict[str, dict]) -> bool:
    """Whether a checkpoint's UNet takes 9 channels (latents, mask, masked picture)."""
    for key in _INPAINT_CONV_IN:
        shape = header.get(key, {}).get("shape")
        if shape is not None and len(shape) == 4 and shape[1] == 9:
            return True
    return False


_BUNDLED = {
    "vae": ("first_stage_model.", "vae."),
    "text_encoders": ("cond_stage_model.", "conditioner.", "text_encoders.", "text_encoder"),
}


def bundled_components(path: Path) -> set[str]:
    """Which of a pipeline's component folders a single file holds besides its denoiser
    (`vae`, `text_encoder*`); the others come from the config folder."""
    keys = read_header(path) or {}
    found = set()
    if any(key.startswith(_BUNDLED["vae"]) for key in keys):
        found.add("vae")
    if any(key.startswith(_BUNDLED["text_encoders"]) for key in keys):
        found |= {"text_encoder", "text_encoder_2", "text_encoder_3"}
    return found


def _gguf_diagnosis(path: Path, reads_gguf: bool) -> str | None:
    if not reads_gguf:
        return (
            f"{path.name} is a GGUF file, which this service does not read for this "
            "architecture yet (it does for SD1.5, SDXL and its refiner, SD3.5 and Flux); use a "
            "bf16 file, or a plain fp8 one, which is kept in fp8 (half of bf16's memory)"
        )
    damaged = damage(path)
    if damaged is not None:
        return f"{path.name} is a damaged GGUF file (truncated?): {damaged}; download it again"
    if not tensor_names(path):
        return f"{path.name} is a GGUF file that holds no weights; download it again"
    unsupported = unsupported_quantization(path)
    if unsupported is not None:
        return (
            f"{path.name} holds {unsupported} weights, a GGUF quantization diffusers does not "
            "dequantize; use a Q8_0, Q6_K, Q5_K, Q4_K or Q4_0 file"
        )
    return None
