"""bitsandbytes 4-bit checkpoints, as Forge ships Flux (`flux1-dev-bnb-nf4-v2.safetensors`):
each quantized matrix stored as bitsandbytes saves a `Params4bit` (two 4-bit values a byte,
beside it its block scales `.absmax`, `.quant_map`, the scales' own `.nested_absmax` and
`.nested_quant_map`, and a JSON `.quant_state.bitsandbytes__nf4` with its shape and type).

A fused matrix of the file (Flux's qkv) is several layers of the model, and the packed blocks,
scales and scales of scales do not split with it; so each matrix is dequantized as it is read
(in the model's dtype), renamed and split like any other weight, and every layer the file held
in 4 bits is quantized again as bitsandbytes' `Linear4bit` of the file's type (NF4 or FP4,
blocks of 64, scales quantized too, as Forge's). Re-quantizing what 4-bit dequantized gives the
same codes: each block's largest value is its scale times one, an NF4 level. The quantization
runs where the model moves (on the GPU for a CUDA worker), so the transformer reaches it in 4
bits; it is held once in the model's dtype in memory while it loads. bitsandbytes computes on
CUDA, and on CPUs (0.50 does; slowly: its CPU kernels are a fallback).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

import torch
from safetensors import safe_open

_STATE = ".quant_state.bitsandbytes__"  # + nf4 or fp4
_STATS = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")


def four_bit_weights(keys: Iterable[str]) -> dict[str, str]:
    """Each 4-bit weight's name in a file, and its type (nf4, fp4)."""
    found = {}
    for key in keys:
        weight, marker, kind = key.partition(_STATE)
        if marker:
            found[weight] = kind
    return found


def is_four_bit_stat(key: str) -> bool:
    """A 4-bit weight's scales or state: read with it, no weight of its own."""
    return _STATE in key or key.endswith(tuple(f".weight{s}" for s in _STATS))


def missing_bitsandbytes() -> str | None:
    """Why a 4-bit file cannot be read on this worker (bitsandbytes not installed); None if
    it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "it needs bitsandbytes on the worker (pip install bitsandbytes)"
    return None


def dequantized(
    handle: safe_open, key: str, kind: str, dtype: torch.dtype, keys: set[str]
) -> torch.Tensor:
    """A 4-bit weight of an open file whose tensors are `keys`, in `dtype`."""
    from bitsandbytes.functional import QuantState, dequantize_4bit

    stats: dict[str, torch.Tensor] = {
        s.removeprefix("."): handle.get_tensor(key + s) for s in _STATS if key + s in keys
    }
    stats[f"quant_state.bitsandbytes__{kind}"] = handle.get_tensor(key + _STATE + kind)
    state = QuantState.from_dict(stats, device=torch.device("cpu"))
    return dequantize_4bit(handle.get_tensor(key), state).to(dtype)


def quantize_to_4bit(model: torch.nn.Module, layers: dict[str, str], dtype: torch.dtype) -> int:
    """Each linear layer of `model` named in `layers` as a bitsandbytes `Linear4bit` of its
    type (nf4, fp4), computing in `dtype`; its weight is quantized where the model next moves.
    Returns how many layers are so."""
    from bitsandbytes.nn.modules import Linear4bit, Params4bit

    for name, kind in layers.items():
        layer = model.get_submodule(name)
        if type(layer) is not torch.nn.Linear:
            raise ValueError(
                f"{name} is a {type(layer).__name__}, which bitsandbytes does not hold"
            )
        four_bit = Linear4bit(
            layer.in_features, layer.out_features, layer.bias is not None,
            compute_dtype=dtype, quant_type=kind, device="meta",
        )  # fmt: skip
        four_bit.weight = Params4bit(
            layer.weight.data, requires_grad=False, quant_type=kind, compress_statistics=True,
            blocksize=64,
        )  # fmt: skip
        if layer.bias is not None:
            four_bit.bias = torch.nn.Parameter(layer.bias.data, requires_grad=False)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, four_bit)
    return len(layers)
