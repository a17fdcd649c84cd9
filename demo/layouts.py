"""Demo weights under the names model sites ship them with (LDM's layout, A1111's), for the
demo files that show a newcomer that layout (demo/vaes.py) and for tests of the loaders."""

from __future__ import annotations

import re

import torch

from workers.families.flux_files import (
    _DOUBLE_BLOCK,
    _DOUBLE_FUSED,
    _SINGLE_BLOCK,
    _SINGLE_FUSED,
    _TOP_LEVEL,
)

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


def diffusers_to_bfl(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Flux transformer's weights under BFL's names (q/k/v fused, shift first)."""
    top = {v: k for k, v in _TOP_LEVEL.items()}
    out: dict[str, torch.Tensor] = {}
    # fused BFL name -> (the order of its parts, the parts by diffusers name)
    pending: dict[str, tuple[tuple[str, ...], dict[str, torch.Tensor]]] = {}
    for key, tensor in weights.items():
        stem, _, leaf = key.rpartition(".")
        if stem in top:
            out[f"{top[stem]}.{leaf}"] = tensor
        elif stem == "norm_out.linear":
            scale, shift = tensor.chunk(2, dim=0)
            out[f"final_layer.adaLN_modulation.1.{leaf}"] = torch.cat([shift, scale])
        else:
            match = re.fullmatch(
                r"(single_transformer_blocks|transformer_blocks)\.(\d+)\.(.+)", key
            )
            assert match, key
            double = match[1] == "transformer_blocks"
            prefix = f"{'double' if double else 'single'}_blocks.{match[2]}."
            rest = match[3]
            renames = {v: k for k, v in (_DOUBLE_BLOCK if double else _SINGLE_BLOCK).items()}
            rest_stem, _, rest_leaf = rest.rpartition(".")
            if rest in renames:
                out[prefix + renames[rest]] = tensor
            elif rest_stem in renames:
                out[f"{prefix}{renames[rest_stem]}.{rest_leaf}"] = tensor
            else:
                fused: dict[str, tuple[str, ...]] = (
                    dict(_DOUBLE_FUSED) if double else {"linear1": _SINGLE_FUSED}
                )
                name, order = next((f, parts) for f, parts in fused.items() if rest_stem in parts)
                pending.setdefault(f"{prefix}{name}.{rest_leaf}", (order, {}))[1][rest_stem] = (
                    tensor
                )
    for key, (fused_order, parts) in pending.items():
        out[key] = torch.cat([parts[n] for n in fused_order])
    return out
