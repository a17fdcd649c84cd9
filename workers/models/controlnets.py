"""Loading a registered ControlNet for a model of its architecture.

A diffusers folder brings its config. A single `.safetensors` of a UNet family is built on the
model's own UNet config (a ControlNet is a copy of its model's encoder half: what the rule,
`contract.controlnets`, has made sure of is the same architecture) and takes its weights as
they are, in diffusers' layout, or LDM's (A1111's `control_model.…`) converted by diffusers' own
converter (SDXL's size embedding added, which it leaves out). A transformer's ControlNet comes
as a diffusers folder: its depth is its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import load_file

from contract.registry import ControlNetEntry
from workers.families import pipelines_for
from workers.models.weights import check_fit

_LDM_MARK = "input_hint_block"


@dataclass
class LoadedControlNet:
    entry: ControlNetEntry
    module: ModelMixin
    param_bytes: int
    last_used: float = field(default_factory=time.monotonic)


def load_controlnet(
    entry: ControlNetEntry, denoiser: torch.nn.Module, device: str, dtype: torch.dtype
) -> LoadedControlNet:
    """`entry`'s ControlNet on `device` in `dtype`, for a model whose denoiser is `denoiser`.
    Raises ValueError for a file that does not fit it."""
    classes = pipelines_for(entry.architecture).controlnet
    assert classes is not None  # the registry admits ControlNets only where they are served
    if entry.file.is_dir():
        module = classes.model.from_pretrained(
            str(entry.file), torch_dtype=dtype, local_files_only=True
        )
    elif isinstance(denoiser, UNet2DConditionModel):
        module = _unet_controlnet_file(entry, denoiser, classes.model)
    else:
        raise ValueError(
            f"{entry.file.name}: a {entry.architecture} ControlNet is served from a diffusers "
            "folder (config.json beside its weights); point the entry at one"
        )
    module = module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return LoadedControlNet(entry, module, size)


def _unet_controlnet_file(
    entry: ControlNetEntry, unet: UNet2DConditionModel, cls: type[ModelMixin]
) -> ModelMixin:
    weights = load_file(str(entry.file))
    channels = _embedder_channels(weights)
    with torch.device("meta"):
        module = cls.from_unet(
            unet, conditioning_embedding_out_channels=channels, load_weights_from_unet=False
        )
    if any(_LDM_MARK in key for key in weights):
        weights = _from_ldm(weights, dict(module.config))
    missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    check_fit(
        missing, unexpected, f"{entry.file.name} does not fit the model's UNet as a ControlNet"
    )
    return module


# SDXL's size and crop embedding under LDM's names: diffusers' ControlNet converter maps the
# UNet's layers but not this one (measured: an SDXL ControlNet in LDM names then missed its 4
# tensors).
_ADD_EMBEDDING = {
    "label_emb.0.0.": "add_embedding.linear_1.",
    "label_emb.0.2.": "add_embedding.linear_2.",
}


def _from_ldm(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """LDM's (A1111's `control_model.…`) names as diffusers' ControlNetModel has them."""
    converted = convert_controlnet_checkpoint(weights, config)
    if config.get("addition_embed_type") == "text_time":
        for key, tensor in weights.items():
            bare = key.removeprefix("control_model.")
            ldm = next((p for p in _ADD_EMBEDDING if bare.startswith(p)), None)
            if ldm is not None:
                converted[_ADD_EMBEDDING[ldm] + bare[len(ldm) :]] = tensor
    return converted


def _embedder_channels(weights: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The widths of the conditioning embedder (the small conv net that takes the control
    image), read from its convolutions' shapes: (16, 32, 96, 256) in the ControlNets trainers
    make, other widths in smaller ones. In diffusers' layout its `conv_in` and every second of
    its `blocks` widen; in LDM's, every fourth layer of `input_hint_block`, from 0."""
    out = {k: v.shape[0] for k, v in weights.items() if k.endswith(".weight") and v.ndim == 4}
    if "controlnet_cond_embedding.conv_in.weight" in out:
        widths = [out["controlnet_cond_embedding.conv_in.weight"]]
        k = 1
        while f"controlnet_cond_embedding.blocks.{k}.weight" in out:
            widths.append(out[f"controlnet_cond_embedding.blocks.{k}.weight"])
            k += 2
        return tuple(widths)
    hint = sorted(
        (int(key.split(".")[-2]), width)
        for key, width in out.items()
        if key.startswith(("input_hint_block.", "control_model.input_hint_block."))
    )
    # 0, 4, 8, 12 widen; 2, 6, 10 keep the width; the last (14) is the output, not counted
    widening = [width for index, width in hint if index % 4 == 0]
    return tuple(widening) if widening else (16, 32, 96, 256)
