"""Resident pipelines in one worker process: sharing, accounting and the memory budget."""

from __future__ import annotations

from pathlib import Path

import torch

from contract.registry import ModelRegistry
from workers.models.cache import ModelCache
from workers.models.weights import estimated_bytes


def test_txt2img_and_img2img_share_every_module(registry: ModelRegistry) -> None:
    model = ModelCache(registry).get("demo-sd15")
    for name, module in model.text.components.items():
        if isinstance(module, torch.nn.Module):
            assert model.image.components[name] is module


def test_refiner_reuses_the_base_vae_and_text_encoder_2(registry: ModelRegistry) -> None:
    cache = ModelCache(registry)
    base = cache.get("demo-sdxl")
    alone = cache.resident_bytes()
    refiner = cache.get("demo-sdxl-refiner")
    assert refiner.text.vae is base.text.vae
    assert refiner.text.text_encoder_2 is base.text.text_encoder_2
    assert refiner.shared == ["text_encoder_2", "vae"]
    # Only the refiner's own UNet is new memory.
    unet = sum(p.numel() * p.element_size() for p in refiner.text.unet.parameters())
    unet += sum(b.numel() * b.element_size() for b in refiner.text.unet.buffers())
    assert cache.resident_bytes() - alone == unet


def test_models_stay_loaded_across_uses(registry: ModelRegistry) -> None:
    cache = ModelCache(registry)
    first = cache.get("demo-sd15")
    cache.get("demo-flux")
    assert cache.get("demo-sd15") is first
    assert cache.loads == 2


def test_budget_evicts_the_least_recently_used_model(registry: ModelRegistry) -> None:
    sizes = {}
    for name in ("demo-sd15", "demo-flux", "demo-sdxl"):
        probe = ModelCache(registry)
        probe.get(name)
        sizes[name] = probe.resident_bytes()
    # Room for the two largest, not for all three.
    budget = sum(sorted(sizes.values())[1:]) + 1
    cache = ModelCache(registry, budget_bytes=budget)
    cache.get("demo-sd15")
    cache.get("demo-flux")
    cache.get("demo-sd15")  # sd15 is now the most recently used
    cache.get("demo-sdxl")
    assert cache.loaded() == ["demo-sd15", "demo-sdxl"]
    assert cache.evictions == 1
    assert cache.resident_bytes() <= budget


def test_budget_never_evicts_what_the_running_job_needs(registry: ModelRegistry) -> None:
    cache = ModelCache(registry, budget_bytes=1)  # nothing fits
    cache.pinned = frozenset({"demo-sd15", "demo-flux"})
    cache.get("demo-sd15")
    cache.get("demo-flux")
    assert cache.loaded() == ["demo-flux", "demo-sd15"]
    cache.pinned = frozenset()
    cache.get("demo-sdxl")
    assert cache.loaded() == ["demo-sdxl"]


def test_registry_precision_and_vae_tiling_are_applied(demo_models: Path) -> None:
    registry = ModelRegistry.model_validate(
        {
            "models": {
                "tiled": {
                    "architecture": "sd15",
                    "device": "cpu",
                    "dtype": "bf16",
                    "vae_tiling": True,
                    "source": {"folder": str(demo_models / "demo-sd15")},
                }
            }
        }
    )
    model = ModelCache(registry).get("tiled")
    assert model.text.unet.dtype == torch.bfloat16
    assert model.text.vae.use_tiling
    assert model.device == "cpu"


def test_a_single_files_estimate_counts_what_its_config_folder_adds(
    tmp_path: Path, demo_models: Path
) -> None:
    # A denoiser-only Flux file: the VAE and both text encoders come from the config folder
    # (about 10 GB for real Flux), which the estimate ignored.
    weights = demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors"
    single = tmp_path / "flux-transformer.safetensors"
    single.write_bytes(weights.read_bytes())
    models = {
        "folder": {"architecture": "flux", "source": {"folder": str(demo_models / "demo-flux")}},
        "file": {
            "architecture": "flux",
            "source": {"single_file": str(single), "config": str(demo_models / "demo-flux")},
        },
    }
    cache = ModelCache(ModelRegistry.model_validate({"models": models}))
    folder = cache._estimate(cache.registry.models["folder"], torch.float32, set())
    file = cache._estimate(cache.registry.models["file"], torch.float32, set())
    assert file == folder
    assert file > estimated_bytes([single], torch.float32) * 1.5
