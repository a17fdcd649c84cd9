"""Tiny upscaler models with random weights, in architectures spandrel recognizes by their keys.

Like the demo pipelines they keep each architecture's real structure (ESRGAN's RRDB blocks and
4x pixel upsampling, Real-ESRGAN Compact's 2x pixel shuffle, SwinIR's windowed attention) at a
width of a few channels: a few hundred KB each, and spandrel detects them exactly as it detects
the published files. Their pictures are noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from workers.models.upscalers import _spandrel

# file name -> what it is
DEMO_UPSCALERS = {
    "esrgan-4x.safetensors": "ESRGAN (RRDBNet), 4x",
    "compact-2x.safetensors": "Real-ESRGAN Compact (SRVGGNet), 2x",
    "swinir-2x.safetensors": "SwinIR, 2x",
}


def build_upscalers(out: Path) -> None:
    _spandrel()  # torchvision may need its stand-in first
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    models = {
        "esrgan-4x.safetensors": ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
        "compact-2x.safetensors": Compact(
            num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2
        ),
        "swinir-2x.safetensors": SwinIR(
            img_size=16,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=4,
            mlp_ratio=2,
            upscale=2,
            upsampler="pixelshuffledirect",
        ),
    }
    for name, model in models.items():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / name)
