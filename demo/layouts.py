"""Demo weights under the names model sites ship them with (LDM's layout, A1111's), for the
demo files that show a newcomer that layout (demo/vaes.py) and for tests of the loaders."""

from __future__ import annotations

import re

import torch

# diffusers VAE name patterns -> LDM ones (the layout of SD checkpoints and BFL's ae.safetensors)
_VAE_RENAMES = [
    (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.", r"\1.mid.attn_1.norm."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.to_([qkv])\.", r"\1.mid.attn_1.\2."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\.", r"\1.mid.attn_1.proj_out."),
    (r"(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"\.conv_shortcut\.", r".nin_shortcut."),
]


def diffusers_vae_to_ldm(weights: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL's weights under LDM's names; the decoder's up blocks are
    numbered from the lowest resolution in diffusers and from the highest in LDM."""
    out = {}
    for key, tensor in weights.items():
        new = key
        up = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.", key)
        if up:
            level = levels - 1 - int(up[1])
            part = f"block.{up[3]}." if up[2] == "resnets" else "upsample."
            new = f"decoder.up.{level}.{part}" + key[up.end() :]
        for pattern, replacement in _VAE_RENAMES:
            new = re.sub(pattern, replacement, new)
        if ".mid.attn_1." in new and new.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convs
        out[new] = tensor
    return out
