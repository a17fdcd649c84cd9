"""No NaN picture: real models made to fail, run through the chain (`workers.stages.finite` checks
what each stage produced)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from contract.registry import ModelRegistry
from tests.workers.stages.test_chain import chain, normalized, run
from workers.models.cache import ModelCache
from workers.stages.outcomes import Failed


def poisoned_copy(
    demo_models: Path, tmp_path: Path, component: str, poison: Callable[[dict[str, Any]], None]
) -> Path:
    """demo-sd15 with one component's weights changed, as a broken or overflowing file would be."""
    folder = tmp_path / f"sd15-{component}"
    shutil.copytree(demo_models / "demo-sd15", folder)
    weights_file = folder / component / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    poison(weights)
    save_file(weights, weights_file)
    return folder


def one_model(folder: Path, **entry: Any) -> ModelRegistry:
    source = {"architecture": "sd15", "source": {"folder": str(folder)}, **entry}
    return ModelRegistry.model_validate({"models": {"poisoned": source}})


def test_a_vae_that_overflows_in_fp16_is_decoded_again_in_fp32(
    demo_models: Path, tmp_path: Path
) -> None:
    # The SDXL fp16-VAE failure mode: activations beyond fp16's range turn the picture NaN
    # (black once made a PNG). Real here: the model runs in fp16 and its VAE overflows.
    def overflow(weights: dict[str, Any]) -> None:
        weights["decoder.conv_in.weight"] *= 1e4
        weights["decoder.conv_in.bias"] *= 1e4

    registry = one_model(poisoned_copy(demo_models, tmp_path, "vae", overflow), dtype="fp16")
    images, [trace] = run(
        normalized(registry, [{"model": "poisoned", "steps": 2}]), ModelCache(registry)
    )
    assert trace.decoded_again_in_fp32
    assert images[0].getextrema() != ((0, 0), (0, 0), (0, 0))  # not black


def test_nan_latents_fail_the_stage_instead_of_a_black_picture(
    demo_models: Path, tmp_path: Path
) -> None:
    def nan(weights: dict[str, Any]) -> None:
        weights["conv_out.bias"][0] = float("nan")

    registry = one_model(poisoned_copy(demo_models, tmp_path, "unet", nan))
    failed = chain(normalized(registry, [{"model": "poisoned", "steps": 2}]), ModelCache(registry))
    assert isinstance(failed, Failed)
    assert failed.type == "non_finite_output"
    assert "stage 0: 'poisoned' produced NaN or infinite latents" in failed.message
