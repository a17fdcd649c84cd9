"""fp8 checkpoints kept in fp8: a denoiser read from a plain fp8 file (`e4m3fn` or `e5m2`, as
Kijai's and ComfyUI's Flux files) keeps the weights the file stored in fp8 in that dtype, each
cast to the model's dtype for its layer's forward and back after it. Those weights are fp8
values, so nothing is lost by holding them so: the picture is the one the same weights draw
held in the model's dtype, at about half of bf16's memory. (diffusers' layerwise casting casts
biases too, which the files keep wider, and skips the modulation layers, a quarter of Flux's
weights, by their `norm` names: hence these hooks.)

A ComfyUI *scaled* fp8 file is not kept in fp8: its weights are the stored values times their
scales, which fp8 without the scales cannot hold; it is read into the model's dtype
(`workers.families.flux_files`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from contract.safetensors_header import read_header
from workers.models.checkpoint_probe import is_scaled_fp8

log = logging.getLogger("imagegen.worker")

FP8_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
# What all-in-one files bundle beside the denoiser (LDM, SGM and ComfyUI prefixes).
_BUNDLED_PREFIXES = (
    "vae.", "first_stage_model.", "text_encoders.", "cond_stage_model.", "conditioner.",
)  # fmt: skip
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
        if key == "__metadata__" or key.startswith(_BUNDLED_PREFIXES):
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


_LAYERS = (torch.nn.Linear, torch.nn.Conv2d)


def keep_in_fp8(denoiser: torch.nn.Module, storage: torch.dtype, compute: torch.dtype) -> int:
    """Hold in `storage` each layer weight of `denoiser` that `storage` holds exactly (those the
    file stored so; biases, norms and the weights the file kept wider stay as they are), cast
    to `compute` for the layer's own forward. Returns how many weights are held so."""
    held = 0
    for layer in denoiser.modules():
        if not isinstance(layer, _LAYERS) or hasattr(layer, _MARK):
            continue
        weight = layer.weight.data
        narrow = weight.to(storage)
        if not torch.equal(narrow.to(weight.dtype), weight):
            continue  # not an fp8 value: kept wide, as the file had it
        layer.weight.data = narrow
        setattr(layer, _MARK, _Held(storage, compute))
        layer.register_forward_pre_hook(_widen)
        layer.register_forward_hook(_narrow)
        held += 1
    if held:
        log.info("%d denoiser weights kept in %s, computing in %s", held, storage, compute)
    return held


_MARK = "_imagegen_fp8"


def _widen(layer: torch.nn.Module, _args: object) -> None:
    held: _Held = getattr(layer, _MARK)
    layer.weight.data = layer.weight.data.to(held.compute)


def _narrow(layer: torch.nn.Module, _args: object, _output: object) -> None:
    held: _Held = getattr(layer, _MARK)
    layer.weight.data = layer.weight.data.to(held.storage)


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
