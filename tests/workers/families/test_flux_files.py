"""Flux files in BFL's and ComfyUI's layouts load and draw what the diffusers folder draws."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import (
    convert_flux_transformer_checkpoint_to_diffusers,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import load_file, save_file

from contract.registry import ModelRegistry
from tests.checkpoint_layouts import comfy_flux_all_in_one, diffusers_to_bfl, diffusers_vae_to_ldm
from workers.families.flux_files import TRANSFORMER_PREFIX, bfl_to_diffusers
from workers.models.cache import ModelCache


def transformer_weights(demo_models: Path) -> dict[str, torch.Tensor]:
    return load_file(
        demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors"
    )


def at_released_width(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The demo transformer's keys at the width of the released models (3072, not 32), one
    column wide: the converters only split along the first dimension, which is what they are
    checked on here without building a 12-billion-parameter model."""
    return {
        k: torch.randn(v.shape[0] * 96, *([1] if v.ndim > 1 else [])) for k, v in weights.items()
    }


def test_the_bfl_converter_is_diffusers_own_at_the_released_width(demo_models: Path) -> None:
    original = at_released_width(transformer_weights(demo_models))
    bfl = diffusers_to_bfl(original)
    assert "double_blocks.0.img_attn.qkv.weight" in bfl  # the fixtures' inverse is right ...
    by_diffusers = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert by_diffusers.keys() == original.keys()
    assert all(torch.equal(by_diffusers[k], original[k]) for k in original)
    ours = bfl_to_diffusers(bfl)  # ... and the worker's converter agrees with diffusers'
    assert ours.keys() == original.keys()
    assert all(torch.equal(ours[k], original[k]) for k in original)


def test_the_ldm_vae_layout_is_what_diffusers_reads(demo_models: Path) -> None:
    folder = demo_models / "demo-flux" / "vae"
    original = load_file(folder / "diffusion_pytorch_model.safetensors")
    config = AutoencoderKL.load_config(str(folder))
    ldm = diffusers_vae_to_ldm(original, len(config["block_out_channels"]))
    assert "decoder.up.0.block.0.conv1.weight" in ldm
    assert "encoder.mid.attn_1.q.weight" in ldm
    back = convert_ldm_vae_checkpoint({"vae." + k: v for k, v in ldm.items()}, config)
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def draw(cache: ModelCache, name: str) -> np.ndarray:
    pipe = cache.get(name).text
    generator = torch.Generator().manual_seed(7)
    out = pipe("a lighthouse", num_inference_steps=2, height=64, width=64, generator=generator)
    return np.asarray(out.images[0], dtype=np.int16)


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to rounding: BFL's fused q/k/v matmul rounds differently from diffusers' three on
    some CPUs (one level of one channel was seen), while a wrongly converted weight redraws the
    whole random-weight picture."""
    return bool(np.abs(a - b).max() <= 2)


def config_without_weights(demo_models: Path, tmp_path: Path) -> Path:
    """demo-flux's configs, tokenizers and scheduler, no weights: what a user copies from the
    model's repository next to an all-in-one file."""
    folder = tmp_path / "flux-config"
    shutil.copytree(
        demo_models / "demo-flux", folder, ignore=shutil.ignore_patterns("*.safetensors")
    )
    return folder


@pytest.mark.parametrize(
    "layout", ["bfl.sft", "comfyui-transformer.safetensors", "comfyui-all-in-one.safetensors"]
)
def test_flux_files_in_the_layouts_sites_ship_draw_what_the_folder_draws(
    tmp_path: Path, demo_models: Path, layout: str
) -> None:
    if layout == "bfl.sft":
        weights = diffusers_to_bfl(transformer_weights(demo_models))
        config = demo_models / "demo-flux"
    elif layout.startswith("comfyui-transformer"):
        bfl = diffusers_to_bfl(transformer_weights(demo_models))
        weights = {TRANSFORMER_PREFIX + k: v for k, v in bfl.items()}
        config = demo_models / "demo-flux"
    else:
        # Before: diffusers' reader left T5's tied embedding on meta, naming neither component
        # nor file. Everything comes from the file here: the config folder holds no weights.
        weights = comfy_flux_all_in_one(demo_models / "demo-flux")
        config = config_without_weights(demo_models, tmp_path)
    single = tmp_path / layout
    save_file(weights, single)
    cache = ModelCache(
        ModelRegistry.model_validate(
            {
                "models": {
                    "folder": {
                        "architecture": "flux",
                        "source": {"folder": str(demo_models / "demo-flux")},
                    },
                    "file": {
                        "architecture": "flux",
                        "source": {"single_file": str(single), "config": str(config)},
                    },
                }
            }
        )
    )
    assert same_picture(draw(cache, "file"), draw(cache, "folder"))
    t5 = cache.get("file").text.text_encoder_2
    assert torch.equal(t5.encoder.embed_tokens.weight, t5.shared.weight)


def test_a_transformer_that_does_not_fit_its_config_folder_names_the_file(
    tmp_path: Path, demo_models: Path
) -> None:
    weights = diffusers_to_bfl(transformer_weights(demo_models))
    weights = {k: v for k, v in weights.items() if not k.startswith("single_blocks.")}
    single = tmp_path / "flux-pruned.safetensors"
    save_file(weights, single)
    source = {"single_file": str(single), "config": str(demo_models / "demo-flux")}
    cache = ModelCache(
        ModelRegistry.model_validate({"models": {"p": {"architecture": "flux", "source": source}}})
    )
    with pytest.raises(
        Exception, match=r"the transformer in flux-pruned\.safetensors does not match"
    ):
        cache.get("p")


def floating_dtypes(module: torch.nn.Module) -> dict[str, set[torch.dtype]]:
    """Each submodule's floating parameter and buffer dtypes, where it holds any."""
    found: dict[str, set[torch.dtype]] = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point():
            found.setdefault(name.rsplit(".", 1)[0], set()).add(tensor.dtype)
    return found


@pytest.mark.parametrize("layout", ["folder", "bfl.sft", "comfyui-all-in-one.safetensors"])
def test_a_flux_model_loaded_in_bf16_holds_every_weight_in_bf16(
    tmp_path: Path, demo_models: Path, layout: str
) -> None:
    # One module left in fp32 makes every step of a bf16 transformer cast to it, or run in it:
    # the first thing to rule out for a slow Flux step (issue 15).
    if layout == "folder":
        source = {"folder": str(demo_models / "demo-flux")}
    else:
        single = tmp_path / layout
        if layout == "bfl.sft":
            save_file(diffusers_to_bfl(transformer_weights(demo_models)), single)
            config = demo_models / "demo-flux"
        else:
            save_file(comfy_flux_all_in_one(demo_models / "demo-flux"), single)
            config = config_without_weights(demo_models, tmp_path)
        source = {"single_file": str(single), "config": str(config)}
    entry = {"architecture": "flux", "source": source, "dtype": "bf16"}
    cache = ModelCache(ModelRegistry.model_validate({"models": {"flux": entry}}))
    pipe = cache.get("flux").text
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        dtypes = floating_dtypes(getattr(pipe, component))
        other = {name: d for name, d in dtypes.items() if d != {torch.bfloat16}}
        assert not other, f"{component} holds weights that are not bf16: {other}"
