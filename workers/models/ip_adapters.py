"""Loading a registered IP-Adapter for a model of its architecture, and lending it to the model
for one call.

diffusers' `load_ip_adapter` writes the adapter into the UNet (its attention processors, an
image projection, a config field) and `unload_ip_adapter` puts *new default* processors back,
not the model's own. Here the adapter is built once per model from diffusers' own converters
(h94's layout, the layout diffusers reads) and kept apart: `lent` swaps its processors in for
one call and the model's own objects back after, so the next job runs the very modules it ran
before. Its CLIP image encoder (a transformers folder) comes with it, with the preprocessing the
encoder was trained at (its folder's `preprocessor_config.json`, or CLIP's at its image size).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from contract.registry import IpAdapterEntry

_PREPROCESSOR = "preprocessor_config.json"


@dataclass
class LoadedIpAdapter:
    entry: IpAdapterEntry
    # The adapter's processors for the model's cross-attention layers, by processor name.
    processors: dict[str, torch.nn.Module]
    projection: torch.nn.Module
    image_encoder: CLIPVisionModelWithProjection
    feature_extractor: CLIPImageProcessor
    param_bytes: int
    last_used: float = field(default_factory=time.monotonic)


def load_ip_adapter(
    entry: IpAdapterEntry, unet: torch.nn.Module, device: str, dtype: torch.dtype
) -> LoadedIpAdapter:
    """`entry`'s IP-Adapter on `device` in `dtype`, built for `unet` (left as it is). Raises
    ValueError for a file that does not fit it."""
    if not isinstance(unet, UNet2DConditionModel):
        raise ValueError(f"{entry.architecture} IP-Adapters are not served here")
    weights = load_file(str(entry.file))
    parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in weights.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts:
            parts[prefix][rest] = tensor
    if not parts["image_proj"] or not parts["ip_adapter"]:
        raise ValueError(f"{entry.file.name} holds no image_proj.* and ip_adapter.* weights")
    try:
        built = unet._convert_ip_adapter_attn_to_diffusers([parts], low_cpu_mem_usage=False)
        projection = unet._convert_ip_adapter_image_proj_to_diffusers(
            parts["image_proj"], low_cpu_mem_usage=False
        )
    except (KeyError, RuntimeError) as exc:  # a key missing, a shape that does not fit
        raise ValueError(
            f"{entry.file.name} does not fit the model's UNet as an IP-Adapter: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    # The self-attention entries are fresh defaults: the model keeps its own there.
    processors = {n: p for n, p in built.items() if hasattr(p, "to_k_ip")}
    encoder = CLIPVisionModelWithProjection.from_pretrained(
        str(entry.image_encoder), torch_dtype=dtype, local_files_only=True
    )
    modules = [*processors.values(), projection, encoder]
    for module in modules:
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    size = sum(t.numel() * t.element_size() for m in modules for t in m.parameters())
    return LoadedIpAdapter(
        entry, processors, projection, encoder, _preprocessing(entry, encoder), size
    )


def _preprocessing(
    entry: IpAdapterEntry, encoder: CLIPVisionModelWithProjection
) -> CLIPImageProcessor:
    if (entry.image_encoder / _PREPROCESSOR).is_file():
        processor: CLIPImageProcessor = CLIPImageProcessor.from_pretrained(
            str(entry.image_encoder), local_files_only=True
        )
        return processor
    # h94's encoder folders ship none: CLIP's own (resize the short side, center crop, CLIP's
    # mean and std), at the size the encoder was trained at.
    size = encoder.config.image_size
    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


@contextlib.contextmanager
def lent(
    pipes: list[DiffusionPipeline],
    unet: UNet2DConditionModel,
    adapter: LoadedIpAdapter,
    weight: float,
) -> Iterator[None]:
    """`adapter` on `unet` (shared by `pipes`) at `weight`, for the calls made inside; the
    model's own attention processors, projection and pipeline parts are back afterwards."""
    own = dict(unet.attn_processors)
    own_projection, own_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    own_parts = [
        (p, getattr(p, "image_encoder", None), getattr(p, "feature_extractor", None)) for p in pipes
    ]
    for processor in adapter.processors.values():
        processor.scale = [weight] * len(processor.scale)  # type: ignore[arg-type,assignment]
    # set_attn_processor empties the dict it is given: each call gets a copy.
    unet.set_attn_processor({**own, **adapter.processors})
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([adapter.projection])
    unet.config.encoder_hid_dim_type = "ip_image_proj"  # what diffusers' loader sets
    for pipe in pipes:
        pipe.image_encoder, pipe.feature_extractor = (
            adapter.image_encoder,
            adapter.feature_extractor,
        )
    try:
        yield
    finally:
        unet.set_attn_processor(dict(own))
        unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = own_projection, own_type
        for pipe, encoder, extractor in own_parts:
            pipe.image_encoder, pipe.feature_extractor = encoder, extractor
