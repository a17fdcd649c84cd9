"""SD1.5's and SDXL's inpainting checkpoints are told apart from the ordinary ones by their
UNet's input channels, against the registry's `variant: inpainting`; their GGUF UNets (and the
SDXL refiner's) load by the worker's real loader, stay quantized and draw close to the full
models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter
from PIL import Image
from safetensors.torch import load_file

from contract.registry import ModelEntry
from demo.quantized import write_gguf
from tests.checkpoint_layouts import diffusers_unet_to_ldm
from tests.drawing import picture
from tests.helpers import registry_of
from workers.families import ArchitectureMismatch
from workers.families.sd import check_inpainting
from workers.models.cache import LoadedModel, ModelCache, ModelUnavailable


def entry(arch: str, variant: str | None) -> ModelEntry:
    return ModelEntry.model_validate(
        {"name": f"my-{arch}", "architecture": arch, "variant": variant, "source": {"folder": "/m"}}
    )


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_the_unets_channels_must_be_what_the_registry_says(demo_models: Path, arch: str) -> None:
    ordinary = DiffusionPipeline.from_pretrained(demo_models / f"demo-{arch}")
    inpainting = DiffusionPipeline.from_pretrained(demo_models / "demo-inpainting" / arch)
    check_inpainting(entry(arch, None), ordinary)
    check_inpainting(entry(arch, "inpainting"), inpainting)
    with pytest.raises(ArchitectureMismatch, match="takes 4 channels, not 9"):
        check_inpainting(entry(arch, "inpainting"), ordinary)
    with pytest.raises(ArchitectureMismatch, match="register it with variant: inpainting"):
        check_inpainting(entry(arch, None), inpainting)


@pytest.fixture(scope="module")
def gguf_unets(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    """The demo SD1.5 and SDXL UNets as Q8_0 GGUF files under LDM's names (SD1.5's with the
    `model.diffusion_model.` prefix A1111's checkpoints carry, SDXL's without), written with the
    `gguf` package; each beside its full-precision folder."""
    root = tmp_path_factory.mktemp("gguf-unets")
    models: dict[str, dict[str, object]] = {}
    # city96's converter names the refiner's UNet sdxl too.
    named = {"sd15": "sd1", "sdxl": "sdxl", "sdxl-refiner": "sdxl"}
    for arch, prefix in (("sd15", "model.diffusion_model."), ("sdxl", ""), ("sdxl-refiner", "")):
        folder = demo_models / f"demo-{arch}"
        config = json.loads((folder / "unet" / "config.json").read_text())
        weights = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
        ldm = {prefix + k: v for k, v in diffusers_unet_to_ldm(weights, config).items()}
        path = write_gguf(root / f"{arch}-Q8_0.gguf", ldm, named[arch], "Q8_0")
        models[arch] = {"architecture": arch, "source": {"folder": str(folder)}, "device": "cpu"}
        models[f"{arch}-q8"] = {
            "architecture": arch, "device": "cpu",
            "source": {"single_file": str(path), "config": str(folder)},
        }  # fmt: skip
    models["sdxl-as-refiner"] = {
        "architecture": "sdxl-refiner", "device": "cpu",
        "source": {"single_file": str(root / "sdxl-Q8_0.gguf"),
                   "config": str(demo_models / "demo-sdxl-refiner")},
    }  # fmt: skip
    return ModelCache(registry_of(models))


def refined(model: LoadedModel) -> np.ndarray:
    """The refiner's picture of a flat init image (its text pipeline is its img2img)."""
    out = model.text(
        "a harbour", image=Image.new("RGB", (64, 64), (200, 80, 40)), strength=0.5,
        num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="np",
    )  # fmt: skip
    return np.asarray(out.images[0])


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_a_gguf_unet_stays_quantized_and_draws_close_to_the_full_model(
    gguf_unets: ModelCache, arch: str
) -> None:
    held, full = gguf_unets.get(f"{arch}-q8"), gguf_unets.get(arch)
    linears = [m for m in held.text.unet.modules() if isinstance(m, GGUFLinear)]
    assert linears
    assert all(isinstance(m.weight, GGUFParameter) for m in linears)
    assert held.held["unet"].storage == ["Q8_0", "float32"]  # convolutions and norms wide
    drawn, full_drawn = picture(held), picture(full)
    assert np.isfinite(drawn).all()
    # Measured: a mean 0.00024 (SD1.5) and 0.00020 (SDXL) from the full model's picture, pixels
    # in 0..1; the UNet holds 0.71 and 0.70 of its fp32 bytes (the demo's convolutions, wide,
    # weigh more than its attention matrices).
    assert np.abs(drawn - full_drawn).mean() < 0.01
    assert np.abs(drawn - full_drawn).max() > 0  # quantized: not the same weights
    estimate = gguf_unets._estimate(gguf_unets.registry.models[f"{arch}-q8"], torch.float32, set())
    assert estimate == pytest.approx(held.param_bytes, rel=0.01)
    assert held.param_bytes < full.param_bytes


def test_the_refiners_gguf_unet_loads_as_the_refiner_and_the_base_unet_is_refused_as_one(
    gguf_unets: ModelCache,
) -> None:
    held, full = gguf_unets.get("sdxl-refiner-q8"), gguf_unets.get("sdxl-refiner")
    assert held.held["unet"].storage == ["Q8_0", "float32"]
    drawn, full_drawn = refined(held), refined(full)
    assert np.isfinite(drawn).all()
    # Measured: a mean 0.00031 from the full refiner's picture, pixels in 0..1.
    assert np.abs(drawn - full_drawn).mean() < 0.01
    assert np.abs(drawn - full_drawn).max() > 0
    # Both files say sdxl: the base UNet is told by its added conditioning (6 time ids, not 5).
    with pytest.raises(ModelUnavailable, match=r"it is an SDXL base UNet .* register it as sdxl"):
        gguf_unets.get("sdxl-as-refiner")
