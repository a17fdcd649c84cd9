"""GGUF checkpoints, as city96 ships Flux and SD3.5 (`flux1-dev-Q8_0.gguf`, `…-Q4_K_S.gguf`):
llama.cpp's container, one denoiser under its original key names, each matrix quantized in
blocks (Q8_0: 32 int8 values and one fp16 scale; the K-quants: 256-value super-blocks).

The weights stay quantized in memory: each layer whose matrix the file quantized becomes
diffusers' `GGUFLinear`, which dequantizes its matrix in the model's dtype for each forward
(a fused kernel on CUDA, where the `kernels` package provides it). Q8_0 holds 8.5 bits a weight,
about 0.53 of bf16; what is not quantized (norms, biases, small embedders) is held in the model's
dtype. A quantized weight of any other layer (a convolution, an embedding) is dequantized once,
at load, as diffusers does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from accelerate import init_empty_weights
from diffusers.quantizers.gguf.utils import (
    GGML_QUANT_SIZES,
    SUPPORTED_GGUF_QUANT_TYPES,
    GGUFLinear,
    GGUFParameter,
    _quant_shape_from_byte_shape,
    dequantize_gguf_tensor,
)

GGUF_MAGIC = b"GGUF"
_PLAIN = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}
# city96's converter writes `general.architecture`; its names for the architectures served here.
_ARCHITECTURES = {"flux": "flux", "sd3": "sd35", "sdxl": "sdxl", "sd1": "sd15"}


def is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of a file's index."""

    name: str
    kind: int  # its GGMLQuantizationType
    elements: int
    stored: int  # bytes in the file

    @property
    def quantized(self) -> bool:
        return self.kind not in _PLAIN


@dataclass(frozen=True)
class _Index:
    """What the questions below ask of a file's index, read once (`_index`)."""

    tensors: tuple[GgufTensor, ...]
    architecture: str | None
    error: str | None  # the reader's words where the index cannot be read


def _index(path: Path) -> _Index:
    stat = path.stat()
    return _read_index(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_index(path: str, _size: int, _mtime_ns: int) -> _Index:
    """A file's index, parsed once per version of the file (size and mtime in the key): a load
    asks the probe, the diagnosis, the variant check and the budget, each of which read it."""
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as exc:
        return _Index((), None, f"{type(exc).__name__}: {exc}")
    field = reader.get_field("general.architecture")
    tensors = tuple(
        GgufTensor(t.name, int(t.tensor_type), int(t.n_elements), int(t.n_bytes))
        for t in reader.tensors
    )
    architecture = None if field is None else _ARCHITECTURES.get(str(field.contents()))
    return _Index(tensors, architecture, None)


def _readable(path: Path) -> _Index:
    index = _index(path)
    if index.error is not None:
        raise ValueError(f"{path.name} is not a readable GGUF file: {index.error}")
    return index


def damage(path: Path) -> str | None:
    """Why the file's index cannot be read (a truncated download, most often), in the reader's
    words; None if it reads."""
    return _index(path).error


def tensors(path: Path) -> tuple[GgufTensor, ...]:
    """The file's index, tensor by tensor (memory-mapped once: no weight is read)."""
    return _readable(path).tensors


def tensor_names(path: Path) -> set[str]:
    """Every tensor's name, from the file's index (memory-mapped: no weight is read)."""
    return {tensor.name for tensor in tensors(path)}


def declared_architecture(path: Path) -> str | None:
    """The architecture the file's metadata names, in this service's names (None: unnamed)."""
    return _readable(path).architecture


def unsupported_quantization(path: Path) -> str | None:
    """The first quantization type in the file that diffusers cannot dequantize, by name."""
    for tensor in _readable(path).tensors:
        if tensor.quantized and tensor.kind not in SUPPORTED_GGUF_QUANT_TYPES:
            return gguf.GGMLQuantizationType(tensor.kind).name
    return None


def read_gguf(path: Path, dtype: torch.dtype, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors under `prefix` (without it): quantized ones as diffusers' `GGUFParameter`
    (their bytes, and the type that says how to dequantize them), the rest in `dtype`."""
    weights: dict[str, torch.Tensor] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        if not tensor.name.startswith(prefix):
            continue
        data = torch.from_numpy(np.array(tensor.data))  # a copy: the reader's map closes
        if tensor.tensor_type in _PLAIN:
            weights[tensor.name.removeprefix(prefix)] = data.to(dtype)
        else:
            weights[tensor.name.removeprefix(prefix)] = GGUFParameter(
                data, quant_type=tensor.tensor_type
            )
    return weights


def stored_bytes(path: Path, dtype: torch.dtype) -> int:
    """Bytes the file's tensors take once read by `read_gguf` (from its index alone)."""
    size = torch.tensor([], dtype=dtype).element_size()
    return sum(t.stored if t.quantized else t.elements * size for t in _readable(path).tensors)


def storage_of(weight: torch.Tensor) -> str:
    """How a weight is held: its dtype (float16, float8_e4m3fn), its GGUF quantization (Q8_0),
    or its bitsandbytes one (nf4, fp4: a `Params4bit`, `nf4_files`)."""
    if isinstance(weight, GGUFParameter):
        return gguf.GGMLQuantizationType(weight.quant_type).name
    four_bit = getattr(weight, "quant_type", None)
    if isinstance(four_bit, str) and getattr(weight, "bnb_quantized", False):
        return four_bit
    return str(weight.dtype).removeprefix("torch.")


def shape_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """A weight's shape as the model sees it (a quantized one's decoded from its bytes)."""
    if isinstance(tensor, GGUFParameter):
        block_size, type_size = GGML_QUANT_SIZES[tensor.quant_type]
        return tuple(_quant_shape_from_byte_shape(tensor.shape, type_size, block_size))
    return tuple(tensor.shape)


def assign_quantized(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype, what: str
) -> None:
    """Load `weights` into a model built on the meta device: every linear layer whose matrix is
    quantized becomes a `GGUFLinear` holding it so; every weight must be there, and no other,
    each of its layer's shape, or this fails naming what differs."""
    _quantize_linears(model, weights, dtype)
    # Its parameters and persistent buffers (SD3's positional embedding is one).
    expected = model.state_dict(keep_vars=True)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(
        name
        for name in set(weights) & set(expected)
        if shape_of(weights[name]) != tuple(expected[name].shape)
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"{what} does not match the config folder's: {len(missing)} weights missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of another shape (e.g. {wrong[:2]})"
        )
    for name, tensor in weights.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if leaf in owner._buffers:
            owner._buffers[leaf] = tensor.to(dtype)
            continue
        if isinstance(tensor, GGUFParameter) and not isinstance(owner, GGUFLinear):
            tensor = torch.nn.Parameter(dequantize_gguf_tensor(tensor).to(dtype), False)
        elif not isinstance(tensor, torch.nn.Parameter):
            tensor = torch.nn.Parameter(tensor, requires_grad=False)
        owner._parameters[leaf] = tensor
    model.eval()


def _quantize_linears(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype
) -> None:
    for name, layer in list(model.named_modules()):
        if type(layer) is not torch.nn.Linear:
            continue
        if not isinstance(weights.get(f"{name}.weight"), GGUFParameter):
            continue
        with init_empty_weights():
            quantized = GGUFLinear(
                layer.in_features, layer.out_features, layer.bias is not None, compute_dtype=dtype
            )
        quantized.requires_grad_(False)
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name), leaf, quantized)
