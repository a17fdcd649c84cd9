"""`compile: true`: the denoiser compiled at load for its sizes (real inductor, on the CPU),
batches of any size on the compiled code, other sizes eagerly, the pictures as eager ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract.registry import ModelRegistry
from workers.models.cache import LoadedModel, ModelCache

pytestmark = pytest.mark.slow  # inductor compiles for tens of seconds: `make test` runs it


@pytest.fixture(scope="module")
def compiled(registry: ModelRegistry) -> LoadedModel:
    entry = registry.models["demo-sd15"].model_copy(
        update={"name": "compiled-sd15", "compile": True, "compile_sizes": [(64, 64)]}
    )
    with_compiled = registry.model_copy(update={"models": {"compiled-sd15": entry}})
    return ModelCache(with_compiled).get("compiled-sd15")  # compiles here (about a minute)


def draw(model: LoadedModel, size: int, prompts: int = 1) -> np.ndarray:
    generators = [torch.Generator().manual_seed(k) for k in range(prompts)]
    out = model.text(
        ["a lighthouse"] * prompts, num_inference_steps=3, height=size, width=size,
        generator=generators, output_type="np",
    )  # fmt: skip
    return np.asarray(out.images)


def test_compiled_at_load_for_its_size_and_any_batch(
    compiled: LoadedModel, registry: ModelRegistry
) -> None:
    denoiser = compiled.compiled
    assert denoiser is not None
    assert denoiser.shapes == {(4, 8, 8)}  # 64x64 pixels: 8x8 latents of 4 channels
    eager = ModelCache(registry).get("demo-sd15")
    before = denoiser.compiled_calls
    for prompts in (1, 3):  # a batch of 3 (6 with CFG) reuses the graph compiled for 2
        assert np.abs(draw(compiled, 64, prompts) - draw(eager, 64, prompts)).max() < 1e-3
    assert denoiser.compiled_calls == before + 6  # 3 steps, twice
    assert denoiser.eager_calls == 0


def test_a_size_not_compiled_runs_eagerly_rather_than_compiling_in_a_job(
    compiled: LoadedModel, registry: ModelRegistry
) -> None:
    denoiser = compiled.compiled
    assert denoiser is not None
    eager = ModelCache(registry).get("demo-sd15")
    started = denoiser.eager_calls
    assert np.array_equal(draw(compiled, 96), draw(eager, 96))  # the module's own code
    assert denoiser.eager_calls == started + 3
