"""GGUF Flux files as city96 ships them (BFL's key names, matrices quantized), written from the
demo transformer with the `gguf` package and loaded by the worker's real loader: the weights
stay quantized in memory, the picture is the one their dequantized values draw, close to the
full-precision model's, and the memory budget counts what is resident.

Q8_0 on the demo transformer (width 32); Q6_K, a K-quant, needs rows of 256 values, so its file
is written from a transformer of width 256 made here with the demo's text encoders and VAE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel
from diffusers.quantizers.gguf.utils import GGUFLinear, dequantize_gguf_tensor
from safetensors.torch import load_file, save_file

from demo.quantized import write_gguf
from tests.checkpoint_layouts import diffusers_to_bfl
from tests.drawing import picture
from tests.helpers import registry_of
from workers.families.gguf_files import (
    declared_architecture,
    read_gguf,
    stored_bytes,
    unsupported_quantization,
)
from workers.models.cache import ModelCache
from workers.models.checkpoint_probe import diagnose, probe_architecture

TRANSFORMER = Path("transformer") / "diffusion_pytorch_model.safetensors"


def _wide_flux(demo_flux: Path, dest: Path) -> Path:
    """A config folder whose transformer is 256 wide (2 heads of 128), the rest the demo's."""
    dest.mkdir()
    for part in demo_flux.iterdir():
        if part.name != "transformer":
            os.symlink(part, dest / part.name)
    config = json.loads((demo_flux / "transformer" / "config.json").read_text())
    config.update(attention_head_dim=128, axes_dims_rope=[32, 48, 48])
    torch.manual_seed(5)
    FluxTransformer2DModel.from_config(config).save_pretrained(dest / "transformer")
    return dest


@pytest.fixture(scope="module")
def files(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    wide = _wide_flux(demo_models / "demo-flux", root / "flux-256")
    paths = {"config-256": wide}
    for name, folder, quantization in (
        ("q8_0", demo_models / "demo-flux", "Q8_0"),
        ("q6_k", wide, "Q6_K"),
    ):
        bfl = diffusers_to_bfl(load_file(folder / TRANSFORMER))
        paths[name] = write_gguf(root / f"flux-{name}.gguf", bfl, "flux", quantization)
        # The same weights in full precision: what the quantized file approximates.
        paths[f"{name}-full"] = root / f"flux-{name}-full.safetensors"
        save_file(bfl, paths[f"{name}-full"])
        # Its dequantized values in full precision: what it must draw exactly.
        dequantized = {
            k: dequantize_gguf_tensor(v).float().contiguous()
            for k, v in read_gguf(paths[name], torch.float32).items()
        }
        paths[f"{name}-values"] = root / f"flux-{name}-values.safetensors"
        save_file(dequantized, paths[f"{name}-values"])
    return paths


@pytest.fixture(scope="module")
def cache(files: dict[str, Path], demo_models: Path) -> ModelCache:
    configs = {"q8_0": demo_models / "demo-flux", "q6_k": files["config-256"]}
    models = {
        name: {
            "architecture": "flux",
            "source": {"single_file": str(files[name]), "config": str(configs[name[:4]])},
            "device": "cpu",
        }
        for name in files
        if name != "config-256"
    }
    return ModelCache(registry_of(models))


def quantization_types(path: Path) -> set[str]:
    return {gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(path).tensors}


def test_the_files_are_what_city96_writes(files: dict[str, Path]) -> None:
    assert quantization_types(files["q8_0"]) == {"Q8_0", "F32"}
    # Rows of 256 values in Q6_K, the narrower ones in Q8_0, as llama.cpp's K-quant files.
    assert quantization_types(files["q6_k"]) == {"Q6_K", "Q8_0", "F32"}
    for name in ("q8_0", "q6_k"):
        assert declared_architecture(files[name]) == "flux"
        assert probe_architecture(files[name]) == "flux"
        assert unsupported_quantization(files[name]) is None
        assert diagnose(files[name], reads_gguf=True) is None


@pytest.mark.parametrize("quantization", ["q8_0", "q6_k"])
def test_a_gguf_transformer_stays_quantized_and_draws_what_its_values_draw(
    cache: ModelCache, quantization: str
) -> None:
    quantized = cache.get(quantization)
    transformer = quantized.text.transformer
    layers = [m for m in transformer.modules() if isinstance(m, GGUFLinear)]
    assert layers
    assert all(layer.weight.dtype == torch.uint8 for layer in layers)
    expected = {"q8_0": ["Q8_0", "float32"], "q6_k": ["Q6_K", "Q8_0", "float32"]}
    assert quantized.held["transformer"].storage == expected[quantization]

    drawn = picture(quantized)
    assert np.isfinite(drawn).all()
    values, full = (
        picture(cache.get(f"{quantization}-values")),
        picture(cache.get(f"{quantization}-full")),
    )
    # Dequantized per layer in fp32: the picture its values draw, up to float rounding.
    assert np.abs(drawn - values).max() < 1e-4
    # Against the unquantized weights, measured: a mean of 0.00046 (Q8_0) and 0.0015 (Q6_K)
    # on pictures in 0…1.
    distance = float(np.abs(drawn - full).mean())
    assert 0 < distance < {"q8_0": 0.002, "q6_k": 0.005}[quantization]


@pytest.mark.parametrize("quantization", ["q8_0", "q6_k"])
def test_the_budget_counts_the_quantized_bytes(
    cache: ModelCache, files: dict[str, Path], quantization: str
) -> None:
    quantized, full = cache.get(quantization), cache.get(f"{quantization}-full")
    entry = cache.registry.models[quantization]
    assert cache._estimate(entry, torch.float32, set()) == pytest.approx(
        quantized.param_bytes, rel=0.01
    )
    held = sum(p.nbytes for p in quantized.text.transformer.parameters())
    assert held == stored_bytes(files[quantization], torch.float32)
    full_held = sum(p.nbytes for p in full.text.transformer.parameters())
    # Q8_0: 8.5 bits a weight of fp32's 32, Q6_K 6.56; norms and biases in fp32 weigh more in
    # the demo than in a released model (measured: 0.28 and 0.21 of fp32).
    assert held < {"q8_0": 0.3, "q6_k": 0.23}[quantization] * full_held


def test_a_lora_on_a_gguf_model_draws_what_it_draws_on_its_values(
    cache: ModelCache, demo_models: Path
) -> None:
    lora = demo_models / "demo-loras" / "demo-flux-lora.safetensors"
    quantized, values = cache.get("q8_0"), cache.get("q8_0-values")
    for model in (quantized, values):
        model.use_adapter("demo-flux-lora", lora, keep={"demo-flux-lora"})
        model.text.set_adapters(["demo-flux-lora"], [1.0])
    try:
        drawn = picture(quantized)
        assert np.isfinite(drawn).all()
        assert np.abs(drawn - picture(values)).max() < 1e-4
    finally:
        for model in (quantized, values):
            model.delete_adapter("demo-flux-lora")


def test_a_quantization_diffusers_cannot_read_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ternary.gguf"
    writer = gguf.GGUFWriter(path, "flux")
    writer.add_tensor(
        "img_in.weight", np.zeros((1, 54), dtype=np.uint8),
        raw_dtype=gguf.GGMLQuantizationType.TQ1_0,
    )  # fmt: skip
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert unsupported_quantization(path) == "TQ1_0"
    assert "holds TQ1_0 weights" in (diagnose(path, reads_gguf=True) or "")
    # An architecture whose reader does not read GGUF yet says so instead.
    assert "does not read for this architecture yet" in (diagnose(path, reads_gguf=False) or "")
