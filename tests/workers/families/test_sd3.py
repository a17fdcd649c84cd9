"""SD3.5 GGUF transformers as city96 ships them (the MMDiT's own key names, q, k and v joined
in one matrix, matrices quantized), written from the demo transformer with the `gguf` package
and loaded by the worker's real loader: the weights stay quantized, the picture is close to the
full-precision model's, and the memory budget counts what is resident."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter
from safetensors.torch import load_file

from demo.layouts import diffusers_sd3_to_mmdit
from demo.quantized import write_gguf
from tests.drawing import picture
from tests.helpers import registry_of
from workers.models.cache import ModelCache

TRANSFORMER = Path("transformer") / "diffusion_pytorch_model.safetensors"


def test_the_mmdit_layout_written_here_is_what_diffusers_reads_back(demo_models: Path) -> None:
    weights = load_file(demo_models / "demo-sd35" / TRANSFORMER)
    mmdit = diffusers_sd3_to_mmdit(weights)
    assert "joint_blocks.0.x_block.attn.qkv.weight" in mmdit
    assert "joint_blocks.0.x_block.attn2.qkv.weight" in mmdit  # MMDiT-X's dual attention
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(mmdit))
    assert set(back) == set(weights)
    assert all(torch.equal(back[name], weights[name]) for name in weights)


@pytest.fixture(scope="module")
def cache(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    root = tmp_path_factory.mktemp("sd35-gguf")
    folder = demo_models / "demo-sd35"
    mmdit = diffusers_sd3_to_mmdit(load_file(folder / TRANSFORMER))
    plain = write_gguf(root / "sd3.5-Q8_0.gguf", mmdit, "sd3", "Q8_0")
    # As converted from a checkpoint that keeps the denoiser under LDM's prefix.
    prefixed = {"model.diffusion_model." + k: v for k, v in mmdit.items()}
    write_gguf(root / "sd3.5-prefixed-Q8_0.gguf", prefixed, "sd3", "Q8_0")
    models = {
        "full": {"architecture": "sd35", "device": "cpu", "source": {"folder": str(folder)}},
        **{
            name: {"architecture": "sd35", "device": "cpu",
                   "source": {"single_file": str(path), "config": str(folder)}}
            for name, path in (("q8", plain), ("q8-prefixed", root / "sd3.5-prefixed-Q8_0.gguf"))
        },
    }  # fmt: skip
    return ModelCache(registry_of(models))


@pytest.mark.parametrize("name", ["q8", "q8-prefixed"])
def test_a_gguf_sd35_transformer_stays_quantized_and_draws_close_to_the_full_model(
    cache: ModelCache, name: str
) -> None:
    held, full = cache.get(name), cache.get("full")
    linears = [m for m in held.text.transformer.modules() if isinstance(m, GGUFLinear)]
    assert linears
    assert all(isinstance(m.weight, GGUFParameter) for m in linears)
    # The split q, k and v matrices are held as the file quantized them.
    assert isinstance(held.text.transformer.transformer_blocks[0].attn.to_k.weight, GGUFParameter)
    assert held.held["transformer"].storage == ["Q8_0", "float32"]
    drawn, full_drawn = picture(held), picture(full)
    assert np.isfinite(drawn).all()
    # Measured: a mean 0.00083 from the full model's picture, pixels in 0..1.
    assert np.abs(drawn - full_drawn).mean() < 0.01
    assert np.abs(drawn - full_drawn).max() > 0  # quantized: not the same weights
    estimate = cache._estimate(cache.registry.models[name], torch.float32, set())
    assert estimate == pytest.approx(held.param_bytes, rel=0.01)
    assert held.param_bytes < full.param_bytes
