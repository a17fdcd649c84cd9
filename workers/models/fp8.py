"""fp8 checkpoints kept in fp8: a denoiser read from a plain fp8 file (`e4m3fn` or `e5m2`, as
Kijai's and ComfyUI's Flux files) keeps the weights the file stored in fp8 in that dtype, each
cast to the model's dtype for its layer's forward and back after it. Those weights are fp8
values, so nothing is lost by holding them so: the picture is the one the same weights draw
held in the model's dtype, at about half of bf16's memory. (diffusers' layerwise casting casts
biases too, which the files keep wider, and skips the modulation layers, a quarter of Flux's
weights, by their `norm` names: hence these hooks.)

A ComfyUI *scaled* fp8 file keeps its fp8 values too, each multiplied by its scale around its
layer's forward (`hold_scaled`; `workers.models.scaled_fp8` finds which layer a scale is for).

A full-precision denoiser can be quantized as it loads (the registry's `quantize:`):
`fp8-storage` holds each layer weight in `e4m3fn` with a scale of its own (its largest magnitude
over e4m3fn's 448, as ComfyUI's scaled files do: unscaled, the small values most layers hold
would round to zero), multiplied back in the model's dtype for the layer's forward: lossy, on any
device. `fp8` computes in fp8 on tensor cores, through torchao, where the GPU has them."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from contract.safetensors_header import read_header
from workers.models.checkpoint_probe import is_scaled_fp8
from workers.models.weights import BUNDLED_PREFIXES

log = logging.getLogger("imagegen.worker")

FP8_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
# Where most of a denoiser's weights are fp8, it is an fp8 file (the rest, norms and biases,
# kept wider by its converter).
_FP8_SHARE = 0.9


def fp8_storage(path: Path) -> torch.dtype | None:
    """The fp8 dtype a plain fp8 single file stores its denoiser in; None for any other file
    (a scaled one included)."""
    header = read_header(path)
    if not header or is_scaled_fp8(header):
        return None
    counts: dict[str, int] = {}
    for key, tensor in header.items():
        if key == "__metadata__" or key.startswith(BUNDLED_PREFIXES):
            continue
        numel = 1
        for dim in tensor["shape"]:
            numel *= dim
        counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + numel
    fp8 = {name: n for name, n in counts.items() if name in FP8_DTYPES}
    total = sum(counts.values())
    if not fp8 or sum(fp8.values()) < _FP8_SHARE * total:
        return None
    return FP8_DTYPES[max(fp8, key=fp8.__getitem__)]


@dataclass(frozen=True)
class _Held:
    storage: torch.dtype
    compute: torch.dtype
    # A quantized weight's (quantize_to_fp8): what multiplies its fp8 values.
    scale: float | None = None


class QuantizeRefused(Exception):
    """The registry's `quantize:` cannot be done on this worker or with this file; says why."""


_LAYERS = (torch.nn.Linear, torch.nn.Conv2d)


def keep_in_fp8(
    denoiser: torch.nn.Module,
    storage: torch.dtype,
    compute: torch.dtype,
    wide: Callable[[str], bool] = lambda _name: False,
) -> int:
    """Hold in `storage` each layer weight of `denoiser` that `storage` holds exactly (those the
    file stored so; biases, norms and the weights the file kept wider stay as they are), cast
    to `compute` for the layer's own forward; not the layers `wide` names. Returns how many
    weights are held so."""
    held = 0
    for name, layer in denoiser.named_modules():
        if not isinstance(layer, _LAYERS) or hasattr(layer, _MARK) or wide(name):
            continue
        weight = layer.weight.data
        narrow = weight.to(storage)
        if not torch.equal(narrow.to(weight.dtype), weight):
            continue  # not an fp8 value: kept wide, as the file had it
        layer.weight.data = narrow
        _hold(layer, _Held(storage, compute))
        held += 1
    if held:
        log.info("%d denoiser weights kept in %s, computing in %s", held, storage, compute)
    return held


_MARK = "_imagegen_fp8"
_STASH = "_imagegen_fp8_values"


def _hold(layer: torch.nn.Module, held: _Held) -> None:
    """Mark `layer` as held narrow, widened around its own forward."""
    setattr(layer, _MARK, held)
    layer.register_forward_pre_hook(_widen)
    layer.register_forward_hook(_narrow)


def _widen(layer: torch.nn.Module, _args: object) -> None:
    held: _Held = getattr(layer, _MARK)
    if held.scale is None:
        layer.weight.data = layer.weight.data.to(held.compute)
    elif not hasattr(layer, _STASH):  # wide already: a forward that raised left it so
        # The fp8 values kept aside (on whichever device the layer is now, offloaded or not),
        # not recomputed from the product: that would round again at every call.
        values = cast(torch.Tensor, layer.weight).data
        setattr(layer, _STASH, values)
        layer.weight.data = values.to(held.compute) * held.scale


def _narrow(layer: torch.nn.Module, _args: object, _output: object) -> None:
    held: _Held = getattr(layer, _MARK)
    if held.scale is None:
        layer.weight.data = layer.weight.data.to(held.storage)
    else:
        layer.weight.data = getattr(layer, _STASH)
        delattr(layer, _STASH)


def hold_scaled(layer: torch.nn.Module, storage: torch.dtype, scale: float) -> None:
    """Hold `layer`'s weight, a scaled-fp8 file's stored values (loaded exactly in the model's
    dtype), in `storage` again, multiplied by `scale` in the model's dtype around its forward
    (`workers.models.scaled_fp8`)."""
    weight = cast(torch.Tensor, layer.weight).data
    narrow = weight.to(storage)
    if not torch.equal(narrow.to(weight.dtype), weight):
        raise ValueError(f"a weight with a scale-weight holds values {storage} does not hold")
    layer.weight.data = narrow
    _hold(layer, _Held(storage, weight.dtype, scale))


_E4M3 = torch.float8_e4m3fn
_E4M3_MAX = torch.finfo(_E4M3).max


def quantize_to_fp8(denoiser: torch.nn.Module, compute: torch.dtype) -> int:
    """Hold each Linear and Conv2d weight of `denoiser` in e4m3fn with a per-tensor scale,
    multiplied back in `compute` for the layer's own forward (`quantize: fp8-storage`). Returns
    how many weights are held so; biases and norms stay as they are."""
    held = 0
    for layer in denoiser.modules():
        if not isinstance(layer, _LAYERS) or hasattr(layer, _MARK):
            continue
        weight = layer.weight.data
        if weight.dtype in FP8_DTYPES.values():
            raise QuantizeRefused("its weights are fp8 already; drop quantize")
        largest = float(weight.abs().max())
        if not largest or largest != largest or largest == float("inf"):
            continue  # all zeros, or not finite: kept as it is
        scale = largest / _E4M3_MAX
        layer.weight.data = (weight.float() / scale).to(_E4M3)
        _hold(layer, _Held(_E4M3, compute, scale))
        held += 1
    log.info("%d denoiser weights quantized to fp8 (scaled), computing in %s", held, compute)
    return held


def compute_in_fp8(denoiser: torch.nn.Module, device: str) -> None:
    """`quantize: fp8`: the denoiser's linear layers computing in fp8 on tensor cores (torchao's
    dynamic float8: each activation and weight scaled to e4m3 per row)."""
    from torchao.quantization import (  # type: ignore[import-not-found]
        Float8DynamicActivationFloat8WeightConfig,
        quantize_,
    )

    quantize_(denoiser, Float8DynamicActivationFloat8WeightConfig())
    log.info("denoiser computing in fp8 (torchao dynamic float8)")


def check_fp8_compute(device: str) -> None:
    """QuantizeRefused where `quantize: fp8` cannot run: a device without fp8 tensor cores (CUDA
    compute capability 8.9+: Ada, Hopper, Blackwell), or no torchao. Asked before any weight is
    read."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise QuantizeRefused(
            f"quantize fp8 computes on fp8 tensor cores, and this worker runs it on {device!r}; "
            "use quantize fp8-storage (fp8 weights, computed in the model's dtype) on any device"
        )
    capability = torch.cuda.get_device_capability(torch.device(device))
    if capability < (8, 9):
        name = torch.cuda.get_device_name(torch.device(device))
        raise QuantizeRefused(
            f"quantize fp8 needs fp8 tensor cores (compute capability 8.9+), and {name} is "
            f"{capability[0]}.{capability[1]}; use quantize fp8-storage"
        )
    if importlib.util.find_spec("torchao") is None:
        raise QuantizeRefused("quantize fp8 needs torchao on this worker (pip install torchao)")


@contextlib.contextmanager
def adapters_made_in_compute_dtype(denoiser: torch.nn.Module) -> Iterator[None]:
    """Load a LoRA into a denoiser kept in fp8: peft makes each adapter layer in its base
    layer's dtype, and an fp8 adapter neither keeps the LoRA's values nor computes (no fp8
    matmul on a CPU). So the held weights are in their compute dtype while the adapter is made
    and loaded (exactly: fp8 values are the compute dtype's too), and back in fp8 after; the
    adapter's own layers stay in the compute dtype."""
    held = [layer for layer in denoiser.modules() if hasattr(layer, _MARK)]
    for layer in held:
        _widen(layer, ())
    try:
        yield
    finally:
        for layer in held:
            _narrow(layer, (), None)
