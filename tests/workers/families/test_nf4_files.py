"""bitsandbytes 4-bit Flux files as Forge ships them (`flux1-dev-bnb-nf4`: BFL's names under
`model.diffusion_model.`, each matrix packed with its quantization state beside it), written
from the demo transformer with bitsandbytes itself (demo/quantized.py), and loaded by the
worker's real loader on this CPU (bitsandbytes 0.50 computes on CPUs): the fused matrices split
into the model's layers stay 4-bit, the picture is finite and close to the full model's, and
the budget counts what is resident, the block scales included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bitsandbytes.nn.modules import Linear4bit
from safetensors.torch import load_file, save_file

from demo.layouts import diffusers_to_bfl
from demo.quantized import four_bit
from tests.drawing import picture
from tests.helpers import registry_of
from workers.families.nf4_files import four_bit_weights, is_four_bit_stat
from workers.models.cache import ModelCache, ModelUnavailable
from workers.models.checkpoint_probe import diagnose


@pytest.fixture(scope="module")
def cache(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    root = tmp_path_factory.mktemp("four-bit")
    bfl = diffusers_to_bfl(
        load_file(demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors")
    )
    fp4 = root / "flux-bnb-fp4.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in four_bit(bfl, "fp4").items()}, fp4)
    sd15 = root / "sd15-bnb-nf4.safetensors"  # an architecture whose reader reads none
    save_file(four_bit({"model.diffusion_model.out.weight": torch.randn(4, 64)}), sd15)
    config = str(demo_models / "demo-flux")
    files = {"nf4": demo_models / "demo-quantized" / "demo-flux-bnb-nf4.safetensors", "fp4": fp4}
    models: dict[str, dict[str, object]] = {
        "full": {"architecture": "flux", "device": "cpu", "source": {"folder": config}},
        **{
            kind: {"architecture": "flux", "device": "cpu",
                   "source": {"single_file": str(path), "config": config}}
            for kind, path in files.items()
        },
        "sd15": {"architecture": "sd15", "device": "cpu",
                 "source": {"single_file": str(sd15), "config": str(demo_models / "demo-sd15")}},
    }  # fmt: skip
    return ModelCache(registry_of(models))


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_a_forge_4bit_flux_file_stays_4bit_and_draws_close_to_the_full_model(
    cache: ModelCache, kind: str
) -> None:
    held, full = cache.get(kind), cache.get("full")
    transformer = held.text.transformer
    four_bit_layers = {n for n, m in transformer.named_modules() if isinstance(m, Linear4bit)}
    # The fused qkv and the single blocks' linear1 split into layers, each quantized again.
    for layer in ("transformer_blocks.0.attn.to_k", "single_transformer_blocks.0.proj_mlp"):
        assert layer in four_bit_layers
        weight = transformer.get_submodule(layer).weight
        assert weight.bnb_quantized
        assert weight.quant_type == kind
    assert held.held["transformer"].storage == ["float32", kind]  # norms and biases wide
    drawn, reference = picture(held), picture(full)
    assert np.isfinite(drawn).all()
    assert drawn.std() > 0.01
    # Measured: a mean 0.0125 (NF4) and 0.0137 (FP4) from the full model's picture, pixels in
    # 0..1 (4 bits a weight: the demo's 32-wide layers feel each rounding).
    assert np.abs(drawn - reference).mean() < 0.05
    estimate = cache._estimate(cache.registry.models[kind], torch.float32, set())
    assert estimate == pytest.approx(held.param_bytes, rel=0.02)
    assert held.held["transformer"].nbytes < 0.3 * full.held["transformer"].nbytes


def test_the_4bit_state_is_told_from_the_weights(demo_models: Path) -> None:
    path = demo_models / "demo-quantized" / "demo-flux-bnb-nf4.safetensors"
    keys = set(load_file(path))
    weights = four_bit_weights(keys)
    assert weights["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"] == "nf4"
    stats = {k for k in keys if is_four_bit_stat(k)}
    assert "model.diffusion_model.double_blocks.0.img_attn.qkv.weight.absmax" in stats
    assert not stats & set(weights)


def test_a_4bit_file_of_another_architecture_is_refused_by_its_header(
    cache: ModelCache, tmp_path: Path
) -> None:
    with pytest.raises(
        ModelUnavailable, match=r"NF4/FP4 file .* which this service reads for Flux"
    ):
        cache.get("sd15")
    path = tmp_path / "x.safetensors"
    save_file(four_bit({"w.weight": torch.randn(4, 64)}), path)
    assert diagnose(path, reads_four_bit=True) is None
