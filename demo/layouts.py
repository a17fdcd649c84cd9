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


# diffusers' SD3 transformer names -> the MMDiT's (Stability's files, city96's GGUF).
_SD3_TOP = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj.": "x_embedder.proj.",
    "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
    "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
    "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
    "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2.",
    "context_embedder.": "context_embedder.",
    "proj_out.": "final_layer.linear.",
}
_SD3_BLOCK = {
    "attn.norm_q.": "x_block.attn.ln_q.",
    "attn.norm_k.": "x_block.attn.ln_k.",
    "attn.norm_added_q.": "context_block.attn.ln_q.",
    "attn.norm_added_k.": "context_block.attn.ln_k.",
    "attn.to_out.0.": "x_block.attn.proj.",
    "attn.to_add_out.": "context_block.attn.proj.",
    "attn2.norm_q.": "x_block.attn2.ln_q.",
    "attn2.norm_k.": "x_block.attn2.ln_k.",
    "attn2.to_out.0.": "x_block.attn2.proj.",
    "norm1.linear.": "x_block.adaLN_modulation.1.",
    "norm1_context.linear.": "context_block.adaLN_modulation.1.",
    "ff.net.0.proj.": "x_block.mlp.fc1.",
    "ff.net.2.": "x_block.mlp.fc2.",
    "ff_context.net.0.proj.": "context_block.mlp.fc1.",
    "ff_context.net.2.": "context_block.mlp.fc2.",
}
# Joined into one matrix in the MMDiT: (its name, the three diffusers layers it holds).
_SD3_QKV = (
    ("x_block.attn.qkv.", ("attn.to_q.", "attn.to_k.", "attn.to_v.")),
    ("context_block.attn.qkv.", ("attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj.")),
    ("x_block.attn2.qkv.", ("attn2.to_q.", "attn2.to_k.", "attn2.to_v.")),
)


def _swapped_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first])


def diffusers_sd3_to_mmdit(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers SD3Transformer2DModel's weights under the MMDiT's names (`joint_blocks.0.
    x_block.attn.qkv.weight`): q, k and v joined, the final modulations' halves swapped back."""
    layers = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("transformer_blocks."))
    last = f"transformer_blocks.{layers - 1}."
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if key.startswith("norm_out.linear.") or key.startswith(last + "norm1_context.linear."):
            tensor = _swapped_halves(tensor)
        top = next((p for p in _SD3_TOP if key.startswith(p)), None)
        if top is not None:
            out[_SD3_TOP[top] + key[len(top) :]] = tensor
            continue
        if key.startswith("norm_out.linear."):
            out["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = tensor
            continue
        _, index, rest = key.split(".", 2)
        inner = next((p for p in _SD3_BLOCK if rest.startswith(p)), None)
        if inner is not None:
            out[f"joint_blocks.{index}.{_SD3_BLOCK[inner]}{rest[len(inner) :]}"] = tensor
    for i in range(layers):
        block = f"transformer_blocks.{i}."
        for joined, parts in _SD3_QKV:
            for leaf in ("weight", "bias"):
                if block + parts[0] + leaf in weights:
                    three = [weights[block + part + leaf] for part in parts]
                    out[f"joint_blocks.{i}.{joined}{leaf}"] = torch.cat(three)
    return out
