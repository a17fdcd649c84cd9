"""Upscaler models, loaded by spandrel from files in their architectures' real layouts, run in
tiles and resized to the stage's exact size; resident under the worker's memory budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from contract.registry import ModelRegistry
from workers.models.cache import ModelCache, ModelUnavailable
from workers.models.upscalers import NonFiniteUpscale, tiled, upscale


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("name", "architecture", "scale"),
    [
        ("esrgan-4x", "ESRGAN", 4),
        ("compact-2x", "RealESRGAN Compact", 2),
        ("swinir-2x", "SwinIR", 2),
    ],
)
def test_spandrel_recognizes_each_file_and_the_picture_gets_the_stage_size(
    registry: ModelRegistry, name: str, architecture: str, scale: int
) -> None:
    upscaler = ModelCache(registry).upscaler(name)
    assert (upscaler.architecture, upscaler.scale) == (architecture, scale)
    # 2x or 4x of 40x24 is rarely what a stage asks for: the result is resized to it exactly.
    [out] = upscale([noise(40, 24)], (100, 60), upscaler)
    assert out.size == (100, 60)
    assert out.mode == "RGB"


def test_tiles_stitch_to_the_whole_for_a_model_that_sees_less_than_the_overlap(
    registry: ModelRegistry,
) -> None:
    # Compact with two 3x3 convolutions reads 4 pixels around each one: with 8 pixels of overlap
    # every kept output pixel saw all it would have seen in one pass.
    model = ModelCache(registry).upscaler("compact-2x").model
    batch = torch.rand(1, 3, 70, 90)
    whole = tiled(model, batch, 2, tile=1000)
    pieces = tiled(model, batch, 2, tile=32, overlap=8)
    assert pieces.shape == whole.shape == (1, 3, 140, 180)
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-5)


def test_upscalers_count_against_the_memory_budget_and_are_evicted_least_recent_first(
    registry: ModelRegistry,
) -> None:
    cache = ModelCache(registry)
    before = cache.resident_bytes()
    esrgan = cache.upscaler("esrgan-4x")
    assert esrgan.param_bytes > 500_000  # 908 KB of fp32 weights in the file
    assert cache.resident_bytes() == before + esrgan.param_bytes
    # A budget that holds ESRGAN and nothing more: loading Compact evicts it.
    cache.budget_bytes = esrgan.param_bytes + 1000
    compact = cache.upscaler("compact-2x")
    assert "esrgan-4x" not in cache._upscalers
    assert cache.resident_bytes() == before + compact.param_bytes
    assert cache.evictions == 1
    # What the running job needs stays, over budget if need be.
    cache.budget_bytes = compact.param_bytes + 1000
    cache.pinned = frozenset({"compact-2x"})
    cache.upscaler("swinir-2x")
    assert set(cache._upscalers) == {"compact-2x", "swinir-2x"}


def test_a_file_that_is_no_upscaler_is_unavailable_with_its_reason(tmp_path: Path) -> None:
    lora = tmp_path / "detail.safetensors"
    save_file(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, lora
    )
    registry = ModelRegistry.model_validate(
        {"models": {}, "upscalers": {"not-one": {"file": str(lora), "device": "cpu"}}}
    )
    with pytest.raises(ModelUnavailable, match=r"detail\.safetensors is a LoRA, not a checkpoint"):
        ModelCache(registry).upscaler("not-one")
    with pytest.raises(ModelUnavailable, match="not in this worker's registry"):
        ModelCache(registry).upscaler("missing")


def test_an_upscaler_that_gives_nan_gives_no_picture(registry: ModelRegistry) -> None:
    upscaler = ModelCache(registry).upscaler("compact-2x")
    hook = upscaler.model.model.register_forward_hook(lambda _m, _a, out: out * float("nan"))
    try:
        with pytest.raises(NonFiniteUpscale, match="compact-2x"):
            upscale([noise(40, 24)], (80, 48), upscaler)  # clamped and cast, NaN would be black
    finally:
        hook.remove()
