"""The demo models written in the layouts model sites ship: the inverse of diffusers' converters.

Tests load these files with the worker's real loader and compare against the demo folders, so a
layout the worker misreads shows up as a failed load or different pixels. Each inverse here is
itself checked against diffusers' forward converter (tests/workers/families/test_flux_files.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from demo.layouts import diffusers_to_bfl, diffusers_vae_to_ldm
from workers.families.flux_files import (
    CLIP_PREFIX,
    T5_PREFIX,
    TRANSFORMER_PREFIX,
    VAE_PREFIX,
)


def comfy_flux_all_in_one(folder: Path) -> dict[str, torch.Tensor]:
    """A ComfyUI all-in-one Flux checkpoint made of a diffusers Flux folder."""

    def weights(component: str) -> dict[str, torch.Tensor]:
        files = sorted((folder / component).glob("*.safetensors"))
        return {k: v for f in files for k, v in load_file(f).items()}

    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    levels = len(vae_config["block_out_channels"])
    out = {TRANSFORMER_PREFIX + k: v for k, v in diffusers_to_bfl(weights("transformer")).items()}
    out |= {VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(weights("vae"), levels).items()}
    # ComfyUI keeps the Hugging Face layout of the text encoders (CLIP with its text_model.)
    out |= {f"{CLIP_PREFIX}text_model.{k}": v for k, v in weights("text_encoder").items()}
    t5 = weights("text_encoder_2")
    t5.pop("encoder.embed_tokens.weight", None)  # saved once, as shared.weight
    out |= {T5_PREFIX + k: v for k, v in t5.items()}
    return out


_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}


def _unet_block_prefixes(weights: dict[str, torch.Tensor], levels: int, layers: int) -> dict:
    """diffusers block prefix -> LDM's, numbered as LDM numbers its sequential blocks."""
    prefixes = {
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    index = 1  # input_blocks.0 is conv_in
    for level in range(levels):
        for layer in range(layers):
            prefixes[f"down_blocks.{level}.resnets.{layer}."] = f"input_blocks.{index}.0."
            prefixes[f"down_blocks.{level}.attentions.{layer}."] = f"input_blocks.{index}.1."
            index += 1
        if level < levels - 1:
            prefixes[f"down_blocks.{level}.downsamplers.0.conv."] = f"input_blocks.{index}.0.op."
            index += 1
    index = 0
    for level in range(levels):
        for layer in range(layers + 1):
            prefixes[f"up_blocks.{level}.resnets.{layer}."] = f"output_blocks.{index}.0."
            prefixes[f"up_blocks.{level}.attentions.{layer}."] = f"output_blocks.{index}.1."
            index += 1
        attends = any(k.startswith(f"up_blocks.{level}.attentions.") for k in weights)
        prefixes[f"up_blocks.{level}.upsamplers.0."] = (
            f"output_blocks.{index - 1}.{2 if attends else 1}."
        )
    return prefixes


def diffusers_unet_to_ldm(
    weights: dict[str, torch.Tensor], config: dict
) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel's weights under LDM's names (`input_blocks.4.1.…`)."""
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    blocks = _unet_block_prefixes(weights, levels, layers)
    out = {}
    for key, tensor in weights.items():
        top = next((p for p in _UNET_TOP if key.startswith(p)), None)
        if top is not None:
            out[_UNET_TOP[top] + key[len(top) :]] = tensor
            continue
        block = next(p for p in blocks if key.startswith(p))
        rest = key[len(block) :]
        if ".resnets." in block:
            inner = next((p for p in _RESNET if rest.startswith(p)), "")
            rest = _RESNET.get(inner, "") + rest[len(inner) :]
        out[blocks[block] + rest] = tensor
    return out


def diffusers_open_clip_to_ldm(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection's weights in OpenCLIP's layout (SDXL's CLIP-G)."""
    out: dict[str, torch.Tensor] = {
        "positional_embedding": weights["text_model.embeddings.position_embedding.weight"],
        "token_embedding.weight": weights["text_model.embeddings.token_embedding.weight"],
        "ln_final.weight": weights["text_model.final_layer_norm.weight"],
        "ln_final.bias": weights["text_model.final_layer_norm.bias"],
        "text_projection": weights["text_projection.weight"].T.contiguous(),
    }
    renames = {
        "layer_norm1.": "ln_1.",
        "layer_norm2.": "ln_2.",
        "mlp.fc1.": "mlp.c_fc.",
        "mlp.fc2.": "mlp.c_proj.",
        "self_attn.out_proj.": "attn.out_proj.",
    }
    layers = {int(k.split(".")[3]) for k in weights if k.startswith("text_model.encoder.layers.")}
    for i in sorted(layers):
        theirs, ours = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            qkv = [weights[f"{theirs}self_attn.{p}_proj.{leaf}"] for p in "qkv"]
            out[f"{ours}attn.in_proj_{leaf}"] = torch.cat(qkv)
            for old, new in renames.items():
                out[f"{ours}{new}{leaf}"] = weights[f"{theirs}{old}{leaf}"]
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def a1111_checkpoint(folder: Path, architecture: str) -> dict[str, torch.Tensor]:
    """A diffusers SD1.5/SDXL/SDXL-refiner folder as one A1111 (LDM/SGM layout) checkpoint."""
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    unet = diffusers_unet_to_ldm(_weights(folder / "unet"), unet_config)
    vae = diffusers_vae_to_ldm(_weights(folder / "vae"), len(vae_config["block_out_channels"]))
    out = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    out |= {f"first_stage_model.{k}": v for k, v in vae.items()}
    if architecture == "sd15":
        clip = _weights(folder / "text_encoder")
        out |= {f"cond_stage_model.transformer.text_model.{k}": v for k, v in clip.items()}
        return out
    embedders = []
    if architecture == "sdxl":
        clip = _weights(folder / "text_encoder")
        embedders.append({f"transformer.text_model.{k}": v for k, v in clip.items()})
    embedders.append(
        {
            f"model.{k}": v
            for k, v in diffusers_open_clip_to_ldm(_weights(folder / "text_encoder_2")).items()
        }
    )
    for index, embedder in enumerate(embedders):
        out |= {f"conditioner.embedders.{index}.{k}": v for k, v in embedder.items()}
    return out


def at_real_depth(demo: Path, dest: Path, architecture: str) -> Path:
    """A copy of a demo SD folder, deep where the keys that identify the architecture are:
    SD1.x by `output_blocks.11` (a UNet of 4 levels, 2 layers each), SDXL by CLIP-G's
    `resblocks.9` (10 layers). Still a few MB: only the depth is real."""
    shutil.copytree(demo, dest)
    torch.manual_seed(0)
    if architecture == "sd15":
        config = dict(UNet2DConditionModel.load_config(str(dest / "unet")))
        config.update(
            block_out_channels=[8, 16, 16, 16],
            layers_per_block=2,
            attention_head_dim=2,
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        )
        UNet2DConditionModel.from_config(config).save_pretrained(dest / "unet")
    else:
        clip_g = CLIPTextConfig.from_pretrained(str(dest / "text_encoder_2"))
        clip_g.num_hidden_layers = 10
        if architecture == "sdxl":
            # CLIP-G wider than CLIP-L, as in SDXL (1280 and 768): diffusers tells the two
            # encoders of a checkpoint apart by their width, and loaded CLIP-L's weights into
            # CLIP-G when both were 32 wide. The UNet attends to both, side by side.
            clip_g.hidden_size, clip_g.intermediate_size = 48, 96
            unet = dict(UNet2DConditionModel.load_config(str(dest / "unet")))
            clip_l = CLIPTextConfig.from_pretrained(str(dest / "text_encoder"))
            unet["cross_attention_dim"] = clip_l.hidden_size + clip_g.hidden_size
            UNet2DConditionModel.from_config(unet).save_pretrained(dest / "unet")
        CLIPTextModelWithProjection(clip_g).save_pretrained(dest / "text_encoder_2")
    return dest


def diffusers_controlnet_to_ldm(
    weights: dict[str, torch.Tensor], config: dict
) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel's weights as lllyasviel's (A1111's) `.pth` names them:
    `control_model.` + the UNet's LDM names for its encoder half, `input_hint_block.N` for the
    conditioning embedder (its convolutions at 0, 2, …, 14: SiLUs between), `zero_convs.i.0`
    and `middle_block_out.0` for the zero convolutions."""
    hint = {"controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
            "controlnet_cond_embedding.conv_out.": "input_hint_block.14."}  # fmt: skip
    own: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        prefix = next((p for p in hint if key.startswith(p)), None)
        if prefix is not None:
            own[hint[prefix] + key[len(prefix) :]] = tensor
        elif key.startswith("controlnet_cond_embedding.blocks."):
            k, rest = key.removeprefix("controlnet_cond_embedding.blocks.").split(".", 1)
            own[f"input_hint_block.{2 * int(k) + 2}.{rest}"] = tensor
        elif key.startswith("controlnet_down_blocks."):
            i, rest = key.removeprefix("controlnet_down_blocks.").split(".", 1)
            own[f"zero_convs.{i}.0.{rest}"] = tensor
        elif key.startswith("controlnet_mid_block."):
            own["middle_block_out.0." + key.removeprefix("controlnet_mid_block.")] = tensor
        else:
            shared[key] = tensor
    ldm = {**diffusers_unet_to_ldm(shared, config), **own}
    return {f"control_model.{key}": tensor for key, tensor in ldm.items()}
