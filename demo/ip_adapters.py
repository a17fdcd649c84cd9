"""Tiny IP-Adapters for the demo SD1.5 and SDXL models, in h94's layout (what diffusers'
`load_ip_adapter` reads): an image projection (`image_proj.proj`, `image_proj.norm`: the image
encoder's embedding to 4 tokens of the model's cross-attention width) and, for each
cross-attention layer of the model's UNet, image keys and values (`ip_adapter.N.to_k_ip`,
`to_v_ip`, N its index among the UNet's attention processors), random where training would have
taught them, so that they change the picture. Beside them, as in h94's folders, the CLIP image
encoder they share (transformers' `CLIPVisionModelWithProjection`, 32 wide, 32-pixel pictures).

Their widths are the demo UNets' (32, 64), which show no real architecture; the demo registry
writes each one's.

`python -m demo.models build` makes them into its `demo-ip-adapters` folder: demo-sd15-ip,
demo-sdxl-ip, image_encoder/."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from contract.ip_adapter_files import IMAGE_ENCODER_FOLDER

_EMBEDDING = 32  # the encoder's projection width: what each adapter's projection takes
_TOKENS = 4  # picture tokens per adapter, as h94's base adapters


def build_demo_ip_adapters(demo_models: Path, out: Path) -> None:
    """The demo registry's IP-Adapters and their image encoder, into `out`."""
    torch.manual_seed(37)
    out.mkdir(parents=True)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, projection_dim=_EMBEDDING, num_hidden_layers=2,
        num_attention_heads=4, image_size=32, patch_size=8,
    )  # fmt: skip
    CLIPVisionModelWithProjection(config).save_pretrained(out / IMAGE_ENCODER_FOLDER)
    for model in ("demo-sd15", "demo-sdxl"):
        unet = UNet2DConditionModel.from_pretrained(demo_models / model / "unet")
        save_file(adapter_weights(unet), str(out / f"{model}-ip.safetensors"))


def adapter_weights(
    unet: UNet2DConditionModel, embedding: int = _EMBEDDING
) -> dict[str, torch.Tensor]:
    """An IP-Adapter's weights for `unet`, in h94's layout."""
    cross = unet.config.cross_attention_dim
    widths = unet.config.block_out_channels
    weights = {
        "image_proj.proj.weight": torch.randn(_TOKENS * cross, embedding) * 0.5,
        "image_proj.proj.bias": torch.zeros(_TOKENS * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for index, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        block = name.split(".")[0]
        if block == "mid_block":
            hidden = widths[-1]
        elif block == "up_blocks":
            hidden = list(reversed(widths))[int(name.split(".")[1])]
        else:
            hidden = widths[int(name.split(".")[1])]
        for part in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{index}.{part}.weight"] = torch.randn(hidden, cross) * 0.3
    return weights
