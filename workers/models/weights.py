"""Reading weight files without loading them: sizes for the memory budget, fingerprints for
sharing identical components between models (the SDXL refiner's VAE and text_encoder_2 are the
base's)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open

# Components whose modules may be shared between pipelines when their weights are identical.
SHAREABLE = ("vae", "text_encoder", "text_encoder_2")
# Floating tensors are held at the model's dtype (fp8 ones too, unless the file is kept in fp8:
# workers.models.fp8); others at their own size.
_FP8_DTYPES = {"F8_E4M3", "F8_E5M2"}
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", *_FP8_DTYPES}
# What all-in-one files bundle beside the denoiser (LDM, SGM and ComfyUI prefixes).
BUNDLED_PREFIXES = (
    "vae.", "first_stage_model.", "text_encoders.", "cond_stage_model.", "conditioner.",
)  # fmt: skip
_OTHER_SIZES = {"I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1}


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def estimated_bytes(
    files: list[Path], dtype: torch.dtype, fp8_kept: bool = False, quantized: bool = False
) -> int:
    """Bytes the tensors in `files` take once loaded as `dtype` (from the headers alone);
    `fp8_kept`: their fp8 matrices stay fp8 (`workers.models.fp8`: layer weights, not biases);
    `quantized`: every float matrix or kernel is quantized to fp8 as it loads (`quantize:
    fp8-storage`), but those of the components an all-in-one file bundles."""
    size = torch.tensor([], dtype=dtype).element_size()
    total = 0
    for path in files:
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = handle.get_slice(key)
                numel = 1
                for dim in tensor.get_shape():
                    numel *= dim
                dtype_name = tensor.get_dtype()
                own = _OTHER_SIZES.get(dtype_name, 1)
                matrix = len(tensor.get_shape()) >= 2
                kept_fp8 = fp8_kept and dtype_name in _FP8_DTYPES
                to_fp8 = quantized and dtype_name in _FLOAT_DTYPES
                if matrix and (kept_fp8 or to_fp8) and not key.startswith(BUNDLED_PREFIXES):
                    total += numel
                else:
                    total += numel * (size if dtype_name in _FLOAT_DTYPES else own)
    return total


def fingerprint(folder: Path) -> str | None:
    """A digest of a component's weights, or None when it has no safetensors files."""
    files = weight_files(folder)
    if not files:
        return None
    return _digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=64)
def _digest(files: tuple[tuple[str, int, int], ...]) -> str:
    sha = hashlib.sha256()
    for path, _size, _mtime in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                sha.update(chunk)
    return sha.hexdigest()


def file_hash(path: Path) -> str:
    """The first 12 hex digits of a file's SHA-256 (A1111's short hash), cached per version."""
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)[:12]


@lru_cache(maxsize=256)
def _file_digest(path: str, _size: int, _mtime: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


def check_fit(missing: list[str], unexpected: list[str], what: str) -> None:
    """Raise ValueError, naming an example of each, where a state dict loaded into a module left
    some of its tensors without weights or brought tensors it does not have."""
    if not missing and not unexpected:
        return
    parts = [f"{len(missing)} tensors missing (e.g. {missing[0]})"] if missing else []
    parts += [f"{len(unexpected)} not its (e.g. {unexpected[0]})"] if unexpected else []
    raise ValueError(f"{what}: {', '.join(parts)}")
