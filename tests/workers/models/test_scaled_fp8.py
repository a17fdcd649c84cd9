"""ComfyUI's scaled fp8 files, written from the demo models as its converter writes them (each
denoiser matrix stored in e4m3 divided by its largest magnitude over 448, the scale beside it
as `<layer>.scale_weight`, the `scaled_fp8` marker), in each architecture's own single-file
layout, and loaded by the worker's real loader beside the same file unscaled in fp32.

diffusers' loader took such files, ignored the scales, and the job "succeeded" with an all-black
PNG. Here the denoiser keeps the file's fp8 values with their scales, its effective weights are
the full file's within e4m3's rounding, the picture is the full file's within a small distance,
and the budget counts one byte a held weight (what it saves against the full file is what
holding them in fp8 saves).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from demo.layouts import diffusers_sd3_to_mmdit, diffusers_to_bfl, diffusers_vae_to_ldm
from demo.quantized import scaled_fp8
from tests.checkpoint_layouts import a1111_checkpoint, at_real_depth
from tests.drawing import picture
from tests.helpers import registry_of
from workers.models.cache import ModelCache, ModelUnavailable
from workers.models.fp8 import adapters_made_in_compute_dtype

DENOISER = "model.diffusion_model."
T5 = "text_encoders.t5xxl.transformer."


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def sd35_all_in_one(folder: Path) -> dict[str, torch.Tensor]:
    """An SD3.5 checkpoint as Stability and ComfyUI ship it: the MMDiT, the VAE (LDM layout),
    CLIP-L, CLIP-G and T5 (Hugging Face layouts under `text_encoders.`)."""
    out = {
        DENOISER + k: v for k, v in diffusers_sd3_to_mmdit(_weights(folder / "transformer")).items()
    }
    levels = len(json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"])
    vae = diffusers_vae_to_ldm(_weights(folder / "vae"), levels)
    out |= {f"first_stage_model.{k}": v for k, v in vae.items()}
    for component, name in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"),
                            ("text_encoder_3", "t5xxl")):  # fmt: skip
        encoder = _weights(folder / component)
        out |= {f"text_encoders.{name}.transformer.{k}": v for k, v in encoder.items()}
    return out


def _files(arch: str, demo_models: Path, root: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The architecture's full single file, and the config folder it loads with."""
    if arch == "flux":
        bfl = diffusers_to_bfl(_weights(demo_models / "demo-flux" / "transformer"))
        return {DENOISER + k: v for k, v in bfl.items()}, demo_models / "demo-flux"
    if arch == "sd35":
        return sd35_all_in_one(demo_models / "demo-sd35"), demo_models / "demo-sd35"
    # SDXL is told by keys of its real depth (CLIP-G's tenth layer): a deeper copy.
    folder = at_real_depth(demo_models / f"demo-{arch}", root / arch, arch)
    return a1111_checkpoint(folder, arch), folder


ARCHITECTURES = ["flux", "sd15", "sdxl", "sd35"]


@pytest.fixture(scope="module")
def cache(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    root = tmp_path_factory.mktemp("scaled-fp8")
    models: dict[str, dict[str, object]] = {}
    for arch in ARCHITECTURES:
        full, config = _files(arch, demo_models, root)
        # ComfyUI scales the denoiser's matrices, and T5's in SD3.5's and Flux's files.
        variants = {"full": full, "scaled": scaled_fp8(full, (DENOISER, T5))}
        if arch == "sd15":  # scales on its CLIP's weights, which no reader here places
            variants["clip-scaled"] = scaled_fp8(full, (DENOISER, "cond_stage_model."))
        for variant, weights in variants.items():
            path = root / f"{arch}-{variant}.safetensors"
            save_file(weights, path)
            models[f"{arch}-{variant}"] = {
                "architecture": arch, "device": "cpu",
                "source": {"single_file": str(path), "config": str(config)},
            }  # fmt: skip
    return ModelCache(registry_of(models))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_scaled_fp8_file_stays_in_fp8_with_its_scales_and_draws_the_full_files_picture(
    cache: ModelCache, arch: str
) -> None:
    full, scaled = cache.get(f"{arch}-full"), cache.get(f"{arch}-scaled")
    folder = "unet" if arch.startswith("sd") and arch != "sd35" else "transformer"
    denoiser = getattr(scaled.text, folder)
    assert "float8_e4m3fn" in scaled.held[folder].storage
    # Widened, each weight is the full file's within e4m3's rounding (3 mantissa bits: half a
    # step is 1/16 of the value); the stored values times their scales, not the values alone.
    with adapters_made_in_compute_dtype(denoiser):
        wide = denoiser.state_dict()
    for key, weight in getattr(full.text, folder).state_dict().items():
        assert torch.allclose(wide[key], weight, rtol=1 / 16, atol=1e-6), key

    drawn, reference = picture(scaled), picture(full)
    assert np.isfinite(drawn).all()
    assert drawn.std() > 0.01  # a picture, not a flat (black) field
    # Measured, pixels in 0..1: a mean 0.0032 (Flux), 0.0038 (SD1.5), 0.0016 (SDXL), 0.0059
    # (SD3.5, its T5 scaled too).
    assert float(np.abs(drawn - reference).mean()) < 0.02
    # The budget counts what holding the matrices in fp8 saves: one byte a held weight.
    estimates = {
        name: cache._estimate(cache.registry.models[f"{arch}-{name}"], torch.float32, set())
        for name in ("full", "scaled")
    }
    saved = full.param_bytes - scaled.param_bytes
    assert estimates["full"] - estimates["scaled"] == pytest.approx(saved, rel=0.01)
    assert scaled.param_bytes < full.param_bytes


def test_a_scale_no_reader_places_fails_the_load_instead_of_drawing_without_it(
    cache: ModelCache,
) -> None:
    with pytest.raises(
        ModelUnavailable, match=r"scales for .* weights this service does not place"
    ):
        cache.get("sd15-clip-scaled")
