"""Flux single files as model sites ship them, read component by component.

Three layouts reach users: BFL's own (`double_blocks.0.img_attn.qkv.weight`, often as `.sft`),
ComfyUI's (the same keys under `model.diffusion_model.`), and ComfyUI's all-in-one files, which add
the VAE (`vae.`, LDM layout) and the text encoders (`text_encoders.clip_l.transformer.`,
`text_encoders.t5xxl.transformer.`, Hugging Face layout). Files with diffusers' own keys exist too.

diffusers' loader for these hard-codes the transformer width of the released models (3072) and
leaves T5's tied input embedding on the meta device when T5 comes from the file. Here the width
is read from the weights, T5's embedding is tied to `shared` explicitly, and every component is
read with `safe_open` one tensor at a time: nothing but the needed tensors is ever in memory.
Whatever the file lacks comes from the registry entry's config folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DiffusionPipeline, FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from contract.safetensors_header import is_scale_key
from workers.families.gguf_files import assign_quantized, is_gguf, read_gguf, tensor_names
from workers.families.nf4_files import (
    dequantized,
    four_bit_weights,
    is_four_bit_stat,
    quantize_to_4bit,
)

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
CLIP_PREFIX = "text_encoders.clip_l.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."

# BFL name -> diffusers name, for weights that are only renamed (".weight"/".bias" follow).
_TOP_LEVEL = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE_BLOCK = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_SINGLE_BLOCK = {
    "modulation.lin": "norm.linear",
    "linear2": "proj_out",
    "norm.query_norm.scale": "attn.norm_q.weight",
    "norm.key_norm.scale": "attn.norm_k.weight",
}
# Fused projections, split along their output dimension.
_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_SINGLE_FUSED = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")


def is_bfl_layout(keys: set[str]) -> bool:
    return "img_in.weight" in keys


def bfl_to_diffusers(bfl: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BFL-layout Flux transformer's weights under diffusers' names; the width is the model's
    own (`img_in` projects into it), not the released models' 3072."""
    width = bfl["img_in.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in bfl.items():
        stem, _, leaf = key.rpartition(".")
        if stem in _TOP_LEVEL:
            out[f"{_TOP_LEVEL[stem]}.{leaf}"] = tensor
        elif stem == "final_layer.adaLN_modulation.1":
            # BFL's modulation yields (shift, scale), diffusers' AdaLayerNormContinuous the reverse.
            shift, scale = tensor.chunk(2, dim=0)
            out[f"norm_out.linear.{leaf}"] = torch.cat([scale, shift])
        elif key.startswith("double_blocks."):
            _, index, rest = key.split(".", 2)
            out.update(_block(f"transformer_blocks.{index}.", rest, tensor, width, double=True))
        elif key.startswith("single_blocks."):
            _, index, rest = key.split(".", 2)
            out.update(
                _block(f"single_transformer_blocks.{index}.", rest, tensor, width, double=False)
            )
        else:
            raise ValueError(f"unexpected key {key!r} for a Flux transformer")
    return out


def _block(
    prefix: str, rest: str, tensor: torch.Tensor, width: int, *, double: bool
) -> dict[str, torch.Tensor]:
    renames = _DOUBLE_BLOCK if double else _SINGLE_BLOCK
    if rest in renames:  # the qk-norm scales: a full name
        return {prefix + renames[rest]: tensor}
    stem, _, leaf = rest.rpartition(".")
    if stem in renames:
        return {f"{prefix}{renames[stem]}.{leaf}": tensor}
    if double and stem in _DOUBLE_FUSED:
        parts = tensor.chunk(3, dim=0)
        return {
            f"{prefix}{name}.{leaf}": part
            for name, part in zip(_DOUBLE_FUSED[stem], parts, strict=True)
        }
    if not double and stem == "linear1":
        # q, k and v of `width` rows each, then the MLP's input projection.
        parts = tensor.split([width, width, width, tensor.shape[0] - 3 * width], dim=0)
        return {
            f"{prefix}{name}.{leaf}": part for name, part in zip(_SINGLE_FUSED, parts, strict=True)
        }
    raise ValueError(f"unexpected key {rest!r} in a Flux block")


def bfl_names(weights: dict[str, torch.Tensor], config: Path) -> dict[str, torch.Tensor]:
    """A Flux file's transformer weights under diffusers' names, whichever layout it has."""
    return bfl_to_diffusers(weights) if is_bfl_layout(set(weights)) else weights


def _four_bit_layers(
    keys: set[str], prefix: str, file_weights: dict[str, torch.Tensor], config: Path
) -> dict[str, str]:
    """The transformer's layers the file held in 4 bits, and their type: the layout's renames
    and splits followed by one marker a row (a layer is 4-bit if all its rows came so)."""
    kinds = four_bit_weights(keys)
    if not kinds:
        return {}
    types = sorted(set(kinds.values()))  # NF4 and FP4 in one file: each weight its own
    code = {kind: float(n + 1) for n, kind in enumerate(types)}
    markers = {
        key: torch.full(
            (tensor.shape[0] if tensor.ndim else 1,), code.get(kinds.get(prefix + key, ""), 0.0)
        )
        for key, tensor in file_weights.items()
    }
    layers = {}
    for name, marker in bfl_names(markers, config).items():
        if name.endswith(".weight") and marker.min() > 0 and marker.min() == marker.max():
            layers[name.removesuffix(".weight")] = types[int(marker[0]) - 1]
    return layers


def _read(
    path: Path, prefix: str, dtype: torch.dtype, skip: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """The tensors under `prefix` (without it), read one at a time; those under `skip` unread.
    A scaled-fp8 file's scales are left out: its fp8 values load exactly in `dtype`, and the
    scales are put on their weights once the model is made (`workers.models.scaled_fp8`). A
    4-bit weight (Forge's NF4 files) comes dequantized (`nf4_files`)."""
    with safe_open(str(path), "pt") as handle:
        every = list(handle.keys())
        present = set(every)
        four_bit = four_bit_weights(every)
        keys = [
            key
            for key in every
            if key.startswith(prefix)
            and not key.startswith(skip)
            and not is_scale_key(key)
            and not is_four_bit_stat(key)
        ]
        return {
            key.removeprefix(prefix): (
                dequantized(handle, key, four_bit[key], dtype, present)
                if key in four_bit
                else handle.get_tensor(key).to(dtype)
            )
            for key in keys
        }


def _assign(model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """Load `weights` into a model built on the meta device, every one of them and nothing else,
    or fail naming what differs."""
    result = model.load_state_dict(weights, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{what} does not match the config folder's: "
            f"{len(result.missing_keys)} weights missing (e.g. {result.missing_keys[:2]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
        )
    model.eval()


def file_keys(path: Path) -> set[str]:
    """Every tensor's name in a Flux single file, safetensors or GGUF."""
    if is_gguf(path):
        return tensor_names(path)
    with safe_open(str(path), "pt") as handle:
        return set(handle.keys())


def load_flux_file(
    path: Path,
    config: Path,
    cls: type[DiffusionPipeline],
    dtype: torch.dtype,
    given: dict[str, torch.nn.Module] | None = None,
) -> DiffusionPipeline:
    """A Flux pipeline from a single file of any of the layouts above, or a GGUF one
    (`gguf_files`: its transformer stays quantized), plus its config folder; the `given`
    components in place of the file's and the folder's."""
    given = given or {}
    quantized = is_gguf(path)
    keys = file_keys(path)
    components: dict[str, torch.nn.Module] = {}
    name = path.name

    prefix = TRANSFORMER_PREFIX if any(k.startswith(TRANSFORMER_PREFIX) for k in keys) else ""
    bundled = (VAE_PREFIX, CLIP_PREFIX, T5_PREFIX, "text_encoders.")
    if quantized:  # city96's files hold the transformer alone
        weights = read_gguf(path, dtype, prefix)
    else:
        weights = _read(path, prefix, dtype, skip=bundled)
    four_bit = {} if quantized else _four_bit_layers(keys, prefix, weights, config)
    weights = bfl_names(weights, config)  # BFL's layout where the file has it
    with init_empty_weights():
        transformer = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(str(config), subfolder="transformer")
        )
    if quantized:
        assign_quantized(transformer, weights, dtype, f"the transformer in {name}")
    else:
        _assign(transformer, weights, f"the transformer in {name}")
        quantize_to_4bit(transformer, four_bit, dtype)
    components["transformer"] = transformer

    if any(k.startswith(VAE_PREFIX) for k in keys):
        vae_config = AutoencoderKL.load_config(str(config), subfolder="vae")
        with init_empty_weights():
            vae = AutoencoderKL.from_config(vae_config)
        ldm = {VAE_PREFIX + k: v for k, v in _read(path, VAE_PREFIX, dtype).items()}
        _assign(vae, convert_ldm_vae_checkpoint(ldm, vae_config), f"the VAE in {name}")
        components["vae"] = vae

    if any(k.startswith(CLIP_PREFIX) for k in keys):
        with init_empty_weights():
            clip = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config / "text_encoder")))
        clip_weights = _read(path, CLIP_PREFIX, dtype)
        if not hasattr(clip, "text_model"):  # transformers >= 5.6 dropped the wrapper
            clip_weights = {k.removeprefix("text_model."): v for k, v in clip_weights.items()}
        # Saved by some tools, used by no Flux pipeline (pooled output comes before it; the
        # position ids are a buffer the model makes itself).
        for unused in ("text_projection.weight", "embeddings.position_ids"):
            clip_weights.pop(unused, None)
        _assign(clip, clip_weights, f"the CLIP-L text encoder in {name}")
        components["text_encoder"] = clip

    if any(k.startswith(T5_PREFIX) for k in keys) and "text_encoder_2" not in given:
        with init_empty_weights():
            t5 = T5EncoderModel(T5Config.from_pretrained(str(config / "text_encoder_2")))
        t5_weights = _read(path, T5_PREFIX, dtype)
        # Files hold the tied input embedding once, as `shared`; left out, it stayed on meta.
        if "shared.weight" in t5_weights:
            t5_weights.setdefault("encoder.embed_tokens.weight", t5_weights["shared.weight"])
        _assign(t5, t5_weights, f"the T5 text encoder in {name}")
        if dtype == torch.float16:
            # As transformers does: T5's feed-forward output overflows fp16.
            for module_name, param in t5.named_parameters():
                if any(part in module_name.split(".") for part in t5._keep_in_fp32_modules or ()):
                    param.data = param.data.float()
        components["text_encoder_2"] = t5

    return cls.from_pretrained(
        str(config), local_files_only=True, torch_dtype=dtype, **{**components, **given}
    )
