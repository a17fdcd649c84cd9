"""The quantized demo files: Q6_K as this module writes it reads back through the `gguf`
package's own dequantizer (its layout is llama.cpp's, not merely self-consistent), and
`make run`'s quantized Flux files are what the registry says they are."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from demo.quantized import quantize_q6_k
from workers.families.gguf_files import declared_architecture, read_gguf
from workers.models.fp8 import fp8_storage


def test_q6_k_reads_back_through_the_gguf_packages_dequantizer() -> None:
    values = np.random.default_rng(0).normal(size=(4, 512)).astype(np.float32)
    values[1, :16] = 0  # a group of zeros: no division by its zero scale
    blocks = quantize_q6_k(values)
    assert blocks.shape == (4, 2 * 210)  # 210 bytes per 256 values
    back = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q6_K)
    assert back.shape == values.shape
    assert np.isfinite(back).all()
    assert (back[1, :16] == 0).all()
    # Within half a step of each 16 values' scale (a 6-bit step is max|x| / 31), plus the
    # rounding of the scales themselves to int8 and fp16.
    step = np.abs(values).reshape(4, -1, 16).max(axis=2, keepdims=True) / 31
    error = np.abs(back - values).reshape(4, -1, 16)
    assert (error <= 0.6 * step + 1e-6).all()


def test_make_runs_quantized_flux_files_are_what_the_registry_says(demo_models: Path) -> None:
    folder = demo_models / "demo-quantized"
    q8 = folder / "demo-flux-Q8_0.gguf"
    assert declared_architecture(q8) == "flux"
    kinds = {gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(q8).tensors}
    assert kinds == {"Q8_0", "F32"}
    assert "img_in.weight" in read_gguf(q8, torch.float32)  # BFL's names, as city96's
    assert fp8_storage(folder / "demo-flux-fp8-e4m3fn.safetensors") is torch.float8_e4m3fn
