"""T5 encoder files in place of a config folder's (a registry entry's `source.t5`): Flux's and
SD3.5's T5-XXL is 9.5 GB in bf16, and the files people run it from are smaller.

- city96's GGUF (`t5-v1_1-xxl-encoder-Q8_0.gguf`): llama.cpp's names (`enc.blk.0.attn_q`, the
  `gguf` package's own map to Hugging Face's), matrices quantized. Each linear layer stays
  quantized (diffusers' `GGUFLinear`, dequantized per forward) but the feed-forward output `wo`.
- ComfyUI's safetensors in Hugging Face's layout: `t5xxl_fp16.safetensors`, read into the
  model's dtype; `t5xxl_fp8_e4m3fn.safetensors`, each fp8 layer weight kept in fp8 and cast for
  its own forward (`workers.models.fp8`) but `wo`'s; its scaled file, each weight multiplied by
  its scale in fp32.

`wo` is held wide because transformers' T5 casts the feed-forward's hidden states to `wo`'s
weight dtype before calling it (the raw bytes' uint8 of a GGUF weight, or fp8: the picture would
be noise), and in fp16 keeps it in fp32 (T5's activations overflow fp16 there), as transformers'
own loader does. It is about a fifth of T5's weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import torch
from accelerate import init_empty_weights
from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor
from safetensors import safe_open
from transformers import T5Config, T5EncoderModel

from contract.safetensors_header import SCALE_SUFFIX, is_scale_key, read_header
from workers.families import ArchitectureMismatch
from workers.families.gguf_files import (
    assign_quantized,
    is_gguf,
    read_gguf,
    tensor_names,
    tensors,
)
from workers.models.fp8 import FP8_DTYPES, hold_scaled, keep_in_fp8

_WO = ".DenseReluDense.wo"
# The linear layers held in GGUF's quantization (llama.cpp's names), as _HELD below.
_GGUF_HELD = re.compile(r"\.(attn_[qkvo]|ffn_gate|ffn_up)\.weight$")
# The linear layers held in fp8 (the feed-forward output and the embeddings are not).
_HELD = re.compile(r"\.(SelfAttention\.[qkvo]|DenseReluDense\.wi(_[01])?)\.weight$")
_TIED = "encoder.embed_tokens.weight"  # T5's input embedding: `shared`, under a second name


def t5_component(config: Path) -> str:
    """The pipeline component the config folder's T5 encoder is (Flux: text_encoder_2, SD3.5:
    text_encoder_3, Chroma: text_encoder)."""
    index = json.loads((config / "model_index.json").read_text())
    for component, value in index.items():
        if isinstance(value, list) and value[-1:] == ["T5EncoderModel"]:
            return component
    raise ArchitectureMismatch(f"the config folder {config} has no T5 encoder; drop source.t5")


def read_t5(path: Path, config: Path, dtype: torch.dtype) -> T5EncoderModel:
    """The config folder's T5 encoder with the weights of `path` (GGUF or safetensors)."""
    component = t5_component(config)
    with init_empty_weights():
        model = T5EncoderModel(T5Config.from_pretrained(str(config / component)))
    if is_gguf(path):
        _read_gguf(model, path, dtype)
    else:
        _read_safetensors(model, path, dtype)
    model.encoder.embed_tokens.weight = model.shared.weight  # tied again: one copy
    model.eval()
    return model


def _wo_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float16 else dtype


def _hugging_face_names(model: T5EncoderModel) -> dict[str, str]:
    """llama.cpp's name of each weight -> Hugging Face's (the `gguf` package's map)."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, model.config.num_layers)
    theirs = {}
    for ours in model.state_dict():
        name = names.get_name(ours, try_suffixes=(".weight", ".bias"))
        if name is not None:
            theirs[name] = ours
    return theirs


def _read_gguf(model: T5EncoderModel, path: Path, dtype: torch.dtype) -> None:
    names = _hugging_face_names(model)
    stray = sorted(set(tensor_names(path)) - set(names))
    if stray:
        raise ArchitectureMismatch(
            f"{path.name} is not a T5 encoder GGUF file of the config folder's T5: it holds "
            f"{len(stray)} tensors a T5 encoder has no place for (e.g. {stray[:2]})"
        )
    weights = {names[name]: tensor for name, tensor in read_gguf(path, dtype).items()}
    for name, tensor in weights.items():
        if _WO in name and isinstance(tensor, GGUFParameter):
            weights[name] = dequantize_gguf_tensor(tensor).to(_wo_dtype(dtype))
    if "shared.weight" in weights:
        weights[_TIED] = weights["shared.weight"]
    assign_quantized(model, weights, dtype, f"the T5 encoder in {path.name}")
    if dtype == torch.float16:
        for name, param in model.named_parameters():
            if _WO in name:
                param.data = param.data.float()


def _read_safetensors(model: T5EncoderModel, path: Path, dtype: torch.dtype) -> None:
    header = read_header(path)
    if header is None:
        raise ArchitectureMismatch(f"{path.name} is neither a GGUF nor a safetensors file")
    keys = [k for k in header if k != "__metadata__" and not is_scale_key(k)]
    storages = {FP8_DTYPES[header[k]["dtype"]] for k in keys if header[k]["dtype"] in FP8_DTYPES}
    scaled: dict[str, float] = {}
    with safe_open(str(path), "pt") as handle:
        weights = {key: handle.get_tensor(key).to(dtype) for key in keys}  # fp8 values: exact
        for key in header:
            if key.endswith(SCALE_SUFFIX):
                scaled[key.removesuffix(SCALE_SUFFIX) + ".weight"] = float(handle.get_tensor(key))
    if "shared.weight" in weights:
        weights.setdefault(_TIED, weights["shared.weight"])
    result = model.load_state_dict(weights, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ArchitectureMismatch(
            f"{path.name} is not a T5 encoder file of the config folder's T5: "
            f"{len(result.missing_keys)} weights missing (e.g. {result.missing_keys[:2]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
        )
    for name, param in model.named_parameters():
        if _WO in name:
            param.data = param.data.to(_wo_dtype(dtype))
    for name, scale in scaled.items():
        layer = model.get_submodule(name.removesuffix(".weight"))
        if _HELD.search(name) and len(storages) == 1:
            hold_scaled(layer, next(iter(storages)), scale)
        else:  # multiplied in: the embedding is read through its tied twin, not its hooks
            layer.weight.data = (layer.weight.data.float() * scale).to(layer.weight.dtype)
    if len(storages) == 1 and not scaled:
        keep_in_fp8(model, next(iter(storages)), dtype, wide=lambda name: _WO in name)


def t5_bytes(path: Path, dtype: torch.dtype) -> int:
    """Bytes the T5 encoder of `path` holds once read by `read_t5` (from the file's index)."""
    size = torch.tensor([], dtype=dtype).element_size()
    wo_size = torch.tensor([], dtype=_wo_dtype(dtype)).element_size()
    if is_gguf(path):
        total = 0
        for tensor in tensors(path):
            if tensor.quantized and _GGUF_HELD.search(tensor.name):
                total += tensor.stored
            else:  # wide: dequantized at load (wo, the embeddings) or stored so
                total += tensor.elements * (wo_size if ".ffn_down." in tensor.name else size)
        return total
    header = read_header(path) or {}
    fp8_kept = len({t["dtype"] for t in header.values() if t.get("dtype") in FP8_DTYPES}) == 1
    total = 0
    for key, tensor in header.items():
        if (
            key == "__metadata__"
            or is_scale_key(key)
            or (key == _TIED and "shared.weight" in header)
        ):
            continue
        numel = 1
        for dim in tensor["shape"]:
            numel *= dim
        kept = tensor["dtype"] in FP8_DTYPES and _HELD.search(key) is not None
        total += numel * (1 if kept and fp8_kept else wo_size if _WO in key else size)
    return total
