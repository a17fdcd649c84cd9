"""Plain fp8 files kept in fp8: a Flux file in BFL's layout with every matrix in e4m3 (as Kijai's
and ComfyUI's fp8 files), loaded by the worker's real loader, against the same values written in
fp32. Held in fp8, the transformer takes less than half the memory and draws the same picture;
a LoRA on it draws what it draws on the fp32 copy; the memory budget's estimate counts one byte
per fp8 weight. A full-precision model quantized as it loads (`quantize: fp8-storage`) holds
fp8 with a scale a weight and draws close to itself; fp8 compute where no fp8 tensor cores are is
a clear reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.checkpoint_layouts import diffusers_to_bfl
from tests.drawing import picture
from tests.helpers import registry_of
from workers.families.flux_files import TRANSFORMER_PREFIX
from workers.models.cache import ModelCache, ModelUnavailable
from workers.models.fp8 import fp8_storage

LORA = "demo-flux-lora"


@pytest.fixture(scope="module")
def files(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo transformer rounded to e4m3: stored so (`fp8`), and the same values in fp32."""
    root = tmp_path_factory.mktemp("fp8")
    bfl = diffusers_to_bfl(
        load_file(demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors")
    )
    fp8 = {
        k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in bfl.items()
    }  # matrices in fp8, norms and biases as they were
    paths = {"fp8": root / "flux-fp8-e4m3fn.safetensors", "wide": root / "flux-wide.safetensors"}
    save_file({TRANSFORMER_PREFIX + k: v for k, v in fp8.items()}, paths["fp8"])
    wide = {TRANSFORMER_PREFIX + k: v.float() for k, v in fp8.items()}
    save_file(wide, paths["wide"])
    return paths


@pytest.fixture(scope="module")
def cache(files: dict[str, Path], demo_models: Path) -> ModelCache:
    models = {
        name: {
            "architecture": "flux",
            "source": {"single_file": str(path), "config": str(demo_models / "demo-flux")},
            "device": "cpu",
        }
        for name, path in files.items()
    }
    return ModelCache(registry_of(models))


def held_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_only_a_plain_fp8_file_is_kept_in_fp8(files: dict[str, Path], tmp_path: Path) -> None:
    assert fp8_storage(files["fp8"]) is torch.float8_e4m3fn
    assert fp8_storage(files["wide"]) is None
    scaled = tmp_path / "scaled.safetensors"  # needs its scales: workers.models.scaled_fp8
    save_file({"w.weight": torch.zeros(2, 2, dtype=torch.float8_e4m3fn),
               "w.scale_weight": torch.ones(())}, scaled)  # fmt: skip
    assert fp8_storage(scaled) is None


def test_a_plain_fp8_file_is_held_in_fp8_and_draws_what_its_values_draw(
    cache: ModelCache,
) -> None:
    fp8, wide = cache.get("fp8"), cache.get("wide")
    held = {p.dtype for p in fp8.text.transformer.parameters()}
    assert torch.float8_e4m3fn in held
    ratio = held_bytes(fp8.text.transformer) / held_bytes(wide.text.transformer)
    # Measured: 0.27 of the fp32 copy, 0.53 of its size in bf16 (biases and norms stay wide,
    # and weigh more in the demo than in a released model).
    assert ratio < 0.3
    drawn, same_values = picture(fp8), picture(wide)
    assert np.isfinite(drawn).all()
    assert np.abs(drawn - same_values).max() < 1e-5  # exact up to float rounding
    # Still fp8 after a forward: the layers go back to storage after computing.
    assert torch.float8_e4m3fn in {p.dtype for p in fp8.text.transformer.parameters()}


def test_a_lora_on_an_fp8_model_draws_what_it_draws_on_the_same_values_in_fp32(
    cache: ModelCache, demo_models: Path
) -> None:
    lora = demo_models / "demo-loras" / f"{LORA}.safetensors"
    fp8, wide = cache.get("fp8"), cache.get("wide")
    for model in (fp8, wide):
        model.use_adapter(LORA, lora, keep={LORA})
        model.text.set_adapters([LORA], [1.0])
    try:
        adapters = [p for n, p in fp8.text.transformer.named_parameters() if ".lora_" in n]
        assert adapters
        assert {p.dtype for p in adapters} == {torch.float32}  # not made in fp8
        drawn, same_values = picture(fp8), picture(wide)
        assert np.isfinite(drawn).all()
        assert np.abs(drawn - same_values).max() < 1e-5
    finally:
        for model in (fp8, wide):
            model.delete_adapter(LORA)


def test_the_budget_counts_one_byte_per_fp8_weight(
    cache: ModelCache, files: dict[str, Path]
) -> None:
    estimate = {
        name: cache._estimate(cache.registry.models[name], torch.float32, set()) for name in files
    }
    # The same transformer; the rest of the pipeline (text encoders, VAE) from the config
    # folder in both.
    loaded = {name: cache.get(name).param_bytes for name in files}
    assert estimate["fp8"] < estimate["wide"]
    assert estimate["fp8"] == pytest.approx(loaded["fp8"], rel=0.01)  # measured: 0.1 % under
    assert estimate["wide"] - estimate["fp8"] == pytest.approx(
        loaded["wide"] - loaded["fp8"], rel=0.01
    )


def test_the_load_log_says_what_each_component_holds(cache: ModelCache) -> None:
    held = cache.get("fp8").held
    assert held["transformer"].storage == ["float32", "float8_e4m3fn"]
    assert held["vae"].storage == ["float32"]


@pytest.fixture(scope="module")
def quantized(demo_models: Path) -> ModelCache:
    """The demo Flux and SD1.5 from their folders, each as it is and with `quantize:
    fp8-storage`, and a Flux asking for fp8 compute (which this CPU cannot do)."""
    models: dict[str, dict[str, object]] = {}
    for name in ("demo-flux", "demo-sd15"):
        arch = "flux" if name == "demo-flux" else "sd15"
        entry = {"architecture": arch, "source": {"folder": str(demo_models / name)},
                 "device": "cpu"}  # fmt: skip
        models[name] = entry
        models[f"{name}-q"] = {**entry, "quantize": "fp8-storage"}
    models["demo-flux-fp8-compute"] = {**models["demo-flux"], "quantize": "fp8"}
    return ModelCache(registry_of(models))


@pytest.mark.parametrize("name", ["demo-flux", "demo-sd15"])
def test_a_model_quantized_as_it_loads_holds_fp8_and_draws_close_to_its_full_self(
    quantized: ModelCache, name: str
) -> None:
    full, held = quantized.get(name), quantized.get(f"{name}-q")
    denoiser = held.text.transformer if name == "demo-flux" else held.text.unet
    wide = full.text.transformer if name == "demo-flux" else full.text.unet
    assert torch.float8_e4m3fn in {p.dtype for p in denoiser.parameters()}
    ratio = held_bytes(denoiser) / held_bytes(wide)
    # Measured: 0.266 (Flux) and 0.257 (SD1.5) of fp32, every layer weight one byte; biases and
    # norms stay wide.
    assert ratio < 0.3
    drawn, full_drawn = picture(held), picture(full)
    assert np.isfinite(drawn).all()
    # Lossy (3 bits of mantissa, one scale a tensor): measured 0.0032 (Flux) and 0.0059 (SD1.5)
    # mean, 0.033 and 0.078 at most, on pictures in [0, 1].
    assert np.abs(drawn - full_drawn).mean() < 0.02
    assert np.abs(drawn - full_drawn).max() > 0  # quantized: not the same weights
    # The fp8 values are put back after each forward, not rounded again: the same picture twice.
    assert np.array_equal(picture(held), drawn)
    assert torch.float8_e4m3fn in {p.dtype for p in denoiser.parameters()}
    # The budget's estimate counts it so before loading it (measured: 0.1 % under).
    for n, model in ((name, full), (f"{name}-q", held)):
        estimate = quantized._estimate(quantized.registry.models[n], torch.float32, set())
        assert estimate == pytest.approx(model.param_bytes, rel=0.02)


def test_fp8_compute_on_a_worker_without_fp8_tensor_cores_is_a_clear_reason(
    quantized: ModelCache,
) -> None:
    with pytest.raises(ModelUnavailable, match=r"quantize fp8: .*fp8 tensor cores.*fp8-storage"):
        quantized.get("demo-flux-fp8-compute")


def test_a_forward_that_raises_leaves_the_quantized_weights_as_they_were(
    quantized: ModelCache,
) -> None:
    model = quantized.get("demo-sd15-q")
    before = picture(model)
    layer = next(m for m in model.text.unet.modules() if isinstance(m, torch.nn.Linear))

    def out_of_memory(_module: object, _args: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")  # what a GPU raises mid-forward

    hook = layer.register_forward_pre_hook(out_of_memory)  # after the widening hook
    with pytest.raises(torch.OutOfMemoryError):
        picture(model)
    hook.remove()
    assert np.array_equal(picture(model), before)  # widened once, not scaled twice
    assert layer.weight.dtype == torch.float8_e4m3fn
