"""Quantized files written from the demo models, as the model sites ship them: GGUF as
city96's converter writes Flux and SD3.5 (the denoiser under its original key names, matrices
quantized, norms and biases in fp32), fp8 as Kijai's Flux files (every matrix in e4m3fn),
ComfyUI's scaled fp8 (each matrix divided by a scale of its own), and bitsandbytes NF4 as
Forge's Flux files. `make run`'s registry serves them, from `demo-quantized/`.

The `gguf` package quantizes Q8_0 (and Q4_0…Q5_1) but none of the K-quants, which most files
on the model sites use (Q4_K_S, Q5_K_M, Q6_K): `quantize_q6_k` writes Q6_K's layout, read back by
the package's own dequantizer in the tests. Like llama.cpp's K-quant files, a Q6_K file holds the
matrices whose rows are not a multiple of 256 values in Q8_0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from demo.layouts import diffusers_sd3_to_mmdit, diffusers_to_bfl

Quantization = Literal["Q8_0", "Q6_K"]
_Q8_0 = gguf.GGMLQuantizationType.Q8_0
_Q6_K = gguf.GGMLQuantizationType.Q6_K
_SUPER_BLOCK = 256  # values in a K-quant super-block
_GROUP = 16  # values sharing one of its 16 int8 scales


def quantize_q6_k(values: np.ndarray) -> np.ndarray:
    """Rows of fp32 values (a multiple of 256 each) in Q6_K's bytes: for each 256 values, the
    low four bits of each 6-bit value (128 bytes), the high two (64), an int8 scale per 16
    values, one fp16 scale for those (210 bytes, 6.56 bits a weight)."""
    rows = values.shape[0]
    blocks = values.astype(np.float32).reshape(-1, _SUPER_BLOCK)
    groups = blocks.reshape(len(blocks), -1, _GROUP)
    group_scale = np.abs(groups).max(axis=2) / 31  # 6-bit values: -32…31
    d = group_scale.max(axis=1, keepdims=True) / 127
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.where(d > 0, np.round(group_scale / d), 0).clip(-128, 127)
        step = (d * scales)[:, :, None]
        q = np.where(step > 0, np.round(groups / step), 0)
    q = (q.clip(-32, 31) + 32).astype(np.uint8).reshape(len(blocks), 2, 128)
    # Value j of a half (128 values): its low nibble in byte j % 64, shifted by 4 · (j // 64);
    # its high two bits in byte j % 32, shifted by 2 · (j // 32) (`gguf.quants.Q6_K`).
    low = q & 0x0F
    ql = (low[:, :, :64] | (low[:, :, 64:] << 4)).reshape(len(blocks), 128)
    high = (q >> 4).reshape(len(blocks), 2, 4, 32)
    qh = (high[:, :, 0] | high[:, :, 1] << 2 | high[:, :, 2] << 4 | high[:, :, 3] << 6).reshape(
        len(blocks), 64
    )
    packed = np.concatenate(
        [
            ql,
            qh.astype(np.uint8),
            scales.astype(np.int8).view(np.uint8),
            d.astype(np.float16).view(np.uint8),
        ],
        axis=1,
    )
    return packed.reshape(rows, -1)


def _stored(tensor: np.ndarray, quantization: Quantization) -> tuple[np.ndarray, int]:
    if tensor.ndim != 2:
        return tensor, gguf.GGMLQuantizationType.F32
    cols = tensor.shape[1]
    if quantization == "Q6_K" and cols % _SUPER_BLOCK == 0:
        return quantize_q6_k(tensor), _Q6_K
    if cols % gguf.GGML_QUANT_SIZES[_Q8_0][0] == 0:
        return gguf.quants.quantize(tensor, _Q8_0), _Q8_0
    return tensor, gguf.GGMLQuantizationType.F32


def write_gguf(
    path: Path, tensors: dict[str, torch.Tensor], architecture: str, quantization: Quantization
) -> Path:
    """`tensors` in a GGUF file whose metadata names `architecture` (city96's names: flux,
    sd3, sdxl, sd1)."""
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, tensor in tensors.items():
        data, kind = _stored(tensor.detach().float().numpy(), quantization)
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType(kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


_E4M3 = torch.float8_e4m3fn


def scaled_fp8(weights: dict[str, torch.Tensor], under: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The matrices under `under` in ComfyUI's scaled fp8, as its converter writes them: stored
    in e4m3 divided by a scale each (its largest magnitude over e4m3's largest, 448), the scale
    beside it as `<layer>.scale_weight`, and the `scaled_fp8` marker; the rest as they are."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(0, dtype=_E4M3)}
    for key, tensor in weights.items():
        if key.startswith(under) and key.endswith(".weight") and tensor.ndim == 2:
            scale = tensor.float().abs().amax() / torch.finfo(_E4M3).max
            out[key] = (tensor.float() / scale).to(_E4M3)
            out[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
        else:
            out[key] = tensor
    return out


def t5_as_gguf(weights: dict[str, torch.Tensor], layers: int, path: Path) -> Path:
    """A T5 encoder as city96's converter writes it: llama.cpp's names (the `gguf` package's
    map from Hugging Face's), matrices in Q8_0; the tied input embedding once, `token_embd`."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, layers)
    theirs = {}
    for ours, tensor in weights.items():
        name = names.get_name(ours, try_suffixes=(".weight", ".bias"))
        if name is not None:
            theirs[name] = tensor
    return write_gguf(path, theirs, "t5encoder", "Q8_0")


def four_bit(weights: dict[str, torch.Tensor], kind: str = "nf4") -> dict[str, torch.Tensor]:
    """Every matrix of `weights` (whose size is whole blocks of 64) in bitsandbytes' 4-bit
    `kind`, saved as Forge's NF4 files save it: the packed values under the weight's name, its
    quantization state beside it (block scales, their own scales, a JSON of shape and type)."""
    from bitsandbytes.functional import quantize_4bit

    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if key.endswith(".weight") and tensor.ndim == 2 and tensor.numel() % 64 == 0:
            packed, state = quantize_4bit(
                tensor.float(), blocksize=64, compress_statistics=True, quant_type=kind
            )
            out[key] = packed
            out |= {f"{key}.{name}": value for name, value in state.as_dict(packed=True).items()}
        else:
            out[key] = tensor
    return out


def build_demo_quantized(demo_models: Path, out: Path) -> None:
    """demo-flux's transformer in BFL's layout as a Q8_0 GGUF file, a plain fp8 file and a Forge
    NF4 file, its T5 encoder as a Q8_0 GGUF file, and
    demo-sd35's in the MMDiT's as a Q8_0 GGUF file and a ComfyUI scaled-fp8 file; each is a
    single file whose text encoders and VAE come from the demo model's folder."""
    out.mkdir(parents=True)
    weights = Path("transformer") / "diffusion_pytorch_model.safetensors"
    bfl = diffusers_to_bfl(load_file(demo_models / "demo-flux" / weights))
    write_gguf(out / "demo-flux-Q8_0.gguf", bfl, "flux", "Q8_0")
    fp8 = {k: v.to(_E4M3) if v.ndim == 2 else v for k, v in bfl.items()}
    save_file(fp8, out / "demo-flux-fp8-e4m3fn.safetensors")
    mmdit = diffusers_sd3_to_mmdit(load_file(demo_models / "demo-sd35" / weights))
    write_gguf(out / "demo-sd35-Q8_0.gguf", mmdit, "sd3", "Q8_0")
    forge = {"model.diffusion_model." + k: v for k, v in four_bit(bfl).items()}
    save_file(forge, out / "demo-flux-bnb-nf4.safetensors")
    t5 = demo_models / "demo-flux" / "text_encoder_2" / "model.safetensors"
    t5_as_gguf(load_file(t5), 2, out / "demo-t5-encoder-Q8_0.gguf")
    comfy = {"model.diffusion_model." + k: v for k, v in mmdit.items()}
    save_file(
        scaled_fp8(comfy, ("model.diffusion_model.",)), out / "demo-sd35-fp8-scaled.safetensors"
    )
