"""ComfyUI's *scaled* fp8 files (`sd3.5_large_fp8_scaled.safetensors`, scaled Flux files,
`t5xxl_fp8_e4m3fn_scaled` inside an all-in-one file): each matrix stored in fp8 divided by a
scale of its own, the scale beside it as `<layer>.scale_weight`, and a `scaled_fp8` marker.

Read as stored, the weights are the true ones divided by their scales; diffusers' loaders read
them so, and the job "succeeded" with a black (NaN) picture. Here the file loads as it would
anyway (its fp8 values are exact in the model's dtype), and then every scale is put where its
weight went: a denoiser layer keeps the file's fp8 values, multiplied by the scale in the
model's dtype around its own forward (`workers.models.fp8`: half of bf16's memory, the weights
the file's, exactly); a text encoder's weight is multiplied once, in fp32. A scale that cannot
be placed fails the load, naming it: no weight is ever used without its scale.

Where a weight went is asked of the family's own converter (the one its loader ran): fed, for
each tensor of the file's denoiser, a vector with one entry per row that holds the tensor's
number, it returns each loaded weight's rows marked with the tensors they came from. Those
converters only rename, split and join along rows (a fused qkv matrix into three), which the
markers follow; no weight is read for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import torch
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

from contract.safetensors_header import SCALE_SUFFIX, is_scale_key, read_header
from workers.families import ArchitectureMismatch, DenoiserNames
from workers.models.fp8 import FP8_DTYPES, hold_scaled
from workers.models.weights import BUNDLED_PREFIXES

log = logging.getLogger("imagegen.worker")

_DENOISER_PREFIX = "model.diffusion_model."
# The text encoders all-in-one files bundle (Hugging Face layout under each prefix), and the
# pipeline components they load as, first present first (Flux's T5 is its text_encoder_2).
_ENCODERS: dict[str, tuple[tuple[str, ...], tuple[type[torch.nn.Module], ...]]] = {
    "text_encoders.t5xxl.transformer.": (("text_encoder_3", "text_encoder_2"), (T5EncoderModel,)),
    "text_encoders.clip_l.transformer.": (
        ("text_encoder",), (CLIPTextModel, CLIPTextModelWithProjection),
    ),
    "text_encoders.clip_g.transformer.": (("text_encoder_2",), (CLIPTextModelWithProjection,)),
}  # fmt: skip


class ScalesNotPlaced(ArchitectureMismatch):
    """A scaled-fp8 file's scale whose weight was not found: the load fails rather than run."""


def _file_scales(path: Path, header: dict[str, dict]) -> dict[str, torch.Tensor]:
    """Each scaled weight's name in the file and its scale, in fp32 (tiny tensors: no weight is
    read)."""
    keys = [key for key in header if key.endswith(SCALE_SUFFIX)]
    if not keys:  # not a scaled file (or not safetensors: a GGUF file has no scales)
        return {}
    with safe_open(str(path), "pt") as handle:
        return {
            key.removesuffix(SCALE_SUFFIX) + ".weight": handle.get_tensor(key).float()
            for key in keys
        }


def place_scales(
    pipe: torch.nn.Module,
    denoiser: torch.nn.Module,
    path: Path,
    config: Path,
    names: DenoiserNames,
    keep_fp8: bool,
    replaced: frozenset[str] = frozenset(),
) -> int:
    """Put each of the file's scales on the weight it belongs to (see the module's doc):
    `keep_fp8` holds denoiser weights in fp8 with their scales (else multiplied in, wide); the
    `replaced` components were not read from the file (their scales are not theirs). Returns
    how many weights were scaled; ScalesNotPlaced if one was not found."""
    header = read_header(path) or {}
    scales = _file_scales(path, header)
    if not scales:
        return 0
    placed = _place_in_denoiser(denoiser, header, scales, config, names, keep_fp8)
    scaled: set[int] = set()  # T5's tied embedding is under two names: scaled once
    for key in sorted(set(scales) - placed):
        if _place_in_encoder(pipe, key, scales[key], scaled, replaced):
            placed.add(key)
    missing = sorted(set(scales) - placed)
    if missing:
        raise ScalesNotPlaced(
            f"{path.name} is a scaled-fp8 file with scales for {len(missing)} weights this "
            "service does not place (it places the denoiser's and those of the encoders under "
            f"`text_encoders.`; e.g. {missing[:2]}); use a file whose other components are not "
            "scaled, or one without scales"
        )
    log.info("%d weights of %s scaled as the file says", len(placed), path.name)
    return len(placed)


def _place_in_denoiser(
    denoiser: torch.nn.Module,
    header: dict[str, dict],
    scales: dict[str, torch.Tensor],
    config: Path,
    names: DenoiserNames,
    keep_fp8: bool,
) -> set[str]:
    keys = [
        k for k in header
        if k != "__metadata__" and not k.startswith(BUNDLED_PREFIXES) and not is_scale_key(k)
    ]  # fmt: skip
    if not any(k in scales for k in keys):
        return set()
    prefix = _DENOISER_PREFIX if all(k.startswith(_DENOISER_PREFIX) for k in keys) else ""
    markers = {
        key.removeprefix(prefix): torch.full((_rows(header[key]["shape"]),), float(number))
        for number, key in enumerate(keys)
    }
    placed: set[str] = set()
    for name, marker in names(markers, config).items():
        sources = {int(n) for n in marker.unique()}
        scaled = [keys[n] for n in sources if keys[n] in scales]
        if not scaled:
            continue
        if len(sources) > 1:  # rows of several tensors in one weight: no converter here joins
            raise ScalesNotPlaced(f"{name} joins {len(sources)} of the file's tensors")
        key = scaled[0]
        scale = scales[key]
        if scale.numel() != 1:
            raise ScalesNotPlaced(f"{key} has {scale.numel()} scales; only one a layer is read")
        layer = denoiser.get_submodule(name.removesuffix(".weight"))
        storage = FP8_DTYPES.get(header[key]["dtype"])
        if keep_fp8 and storage is not None:
            hold_scaled(layer, storage, float(scale))
        else:
            weight = cast(torch.Tensor, layer.weight)
            weight.data = (weight.data.float() * scale).to(weight.dtype)
        placed.add(key)
    return placed


def _place_in_encoder(
    pipe: torch.nn.Module,
    key: str,
    scale: torch.Tensor,
    scaled: set[int],
    replaced: frozenset[str],
) -> bool:
    for prefix, (components, classes) in _ENCODERS.items():
        if not key.startswith(prefix):
            continue
        name = key.removeprefix(prefix)
        for component in components:
            encoder = getattr(pipe, component, None)
            if component in replaced and isinstance(encoder, classes):
                return True  # its weights came from elsewhere (`source.t5`), not the file
            if not isinstance(encoder, classes):
                continue
            params = dict(encoder.named_parameters(remove_duplicate=False))
            # transformers >= 5.6 dropped CLIPTextModel's `text_model.` wrapper.
            param = params.get(name, params.get(name.removeprefix("text_model.")))
            if param is None:
                return False
            if id(param) not in scaled:
                param.data = (param.data.float() * scale).to(param.dtype)
                scaled.add(id(param))
            return True
    return False


def _rows(shape: list[int]) -> int:
    return shape[0] if shape else 1
