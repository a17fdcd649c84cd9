"""The registry's sources load real diffusers pipelines; the demo models keep real structure."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.checkpoint_layouts import a1111_checkpoint, at_real_depth
from tests.helpers import registry_of
from workers.models.cache import ModelCache, ModelUnavailable
from workers.models.checkpoint_probe import probe_architecture


def test_single_file_checkpoint_with_a_local_config_folder(
    tmp_path: Path, demo_models: Path
) -> None:
    # A Flux file as people download them: the transformer alone, the rest from a config folder.
    weights = load_file(
        demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors"
    )
    single = tmp_path / "my-flux.safetensors"
    save_file(weights, single)
    registry = registry_of(
        {
            "my-flux": {
                "architecture": "flux",
                "source": {"single_file": str(single), "config": str(demo_models / "demo-flux")},
                "device": "cpu",
            }
        }
    )
    model = ModelCache(registry).get("my-flux")
    loaded = model.text.transformer.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    image = model.text("a test", num_inference_steps=2, height=64, width=64).images[0]
    assert image.size == (64, 64)


def test_single_file_of_another_architecture_is_refused_with_a_reason(
    tmp_path: Path, demo_models: Path
) -> None:
    weights = load_file(
        demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors"
    )
    single = tmp_path / "actually-flux.safetensors"
    save_file(weights, single)
    registry = registry_of(
        {
            "mislabeled": {
                "architecture": "sd15",
                "source": {"single_file": str(single), "config": str(demo_models / "demo-sd15")},
            }
        }
    )
    with pytest.raises(ModelUnavailable, match="is a flux checkpoint, but the registry says sd15"):
        ModelCache(registry).get("mislabeled")


def test_hub_source_without_network_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = registry_of(
        {"hub-sd": {"architecture": "sd15", "source": {"hub": "org/not-cached"}}}
    )
    with pytest.raises(ModelUnavailable, match="hub-sd"):
        ModelCache(registry).get("hub-sd")


@pytest.mark.parametrize("name", ["flux1-schnell.sft", "MY-FLUX.SAFETENSORS"])
def test_safetensors_under_another_extension_load(
    tmp_path: Path, demo_models: Path, name: str
) -> None:
    # diffusers picks its reader by the extension and read these as pickles, which failed.
    weights = load_file(
        demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors"
    )
    single = tmp_path / name
    save_file(weights, single)
    source = {"single_file": str(single), "config": str(demo_models / "demo-flux")}
    registry = registry_of({"bfl": {"architecture": "flux", "source": source}})
    loaded = ModelCache(registry).get("bfl").text.transformer.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_a_lora_registered_as_a_model_is_unavailable_for_a_reason_a_user_understands(
    tmp_path: Path, demo_models: Path
) -> None:
    # It failed with SingleFileComponentError or IndexError, which the loader did not catch.
    lora = tmp_path / "detail-tweaker.safetensors"
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        },
        lora,
    )
    source = {"single_file": str(lora), "config": str(demo_models / "demo-sd15")}
    cache = ModelCache(registry_of({"tweaker": {"architecture": "sd15", "source": source}}))
    with pytest.raises(ModelUnavailable) as unavailable:
        cache.get("tweaker")
    assert "detail-tweaker.safetensors is a LoRA, not a checkpoint" in str(unavailable.value)
    assert cache.unavailable["tweaker"].startswith("detail-tweaker.safetensors is a LoRA")


def draw(pipe: DiffusionPipeline, refiner: bool) -> np.ndarray:
    generator = torch.Generator().manual_seed(11)
    size = (
        {"image": Image.new("RGB", (64, 64), "teal"), "strength": 0.5}
        if refiner
        else {"height": 64, "width": 64}
    )
    out = pipe("a harbour", num_inference_steps=4, generator=generator, **size)
    return np.asarray(out.images[0]).astype(int)


@pytest.mark.parametrize("architecture", ["sd15", "sdxl", "sdxl-refiner"])
def test_a1111_checkpoints_are_recognized_and_draw_what_the_folder_draws(
    tmp_path: Path, demo_models: Path, architecture: str
) -> None:
    folder = at_real_depth(demo_models / f"demo-{architecture}", tmp_path / "deep", architecture)
    single = tmp_path / f"{architecture}-a1111.safetensors"
    save_file(a1111_checkpoint(folder, architecture), single)
    assert probe_architecture(single) == architecture
    # The file's weights are the only ones: its config folder holds configs and tokenizers.
    config = tmp_path / "config"
    shutil.copytree(folder, config, ignore=shutil.ignore_patterns("*.safetensors"))
    sources = {
        "folder": {"folder": str(folder)},
        "file": {"single_file": str(single), "config": str(config)},
    }
    entries = {name: {"architecture": architecture, "source": s} for name, s in sources.items()}
    cache = ModelCache(registry_of(entries))
    from_file, from_folder = cache.get("file").text, cache.get("folder").text
    for name, module in from_folder.components.items():
        if isinstance(module, torch.nn.Module):
            theirs, ours = module.state_dict(), getattr(from_file, name).state_dict()
            assert theirs.keys() == ours.keys(), name
            assert all(torch.equal(theirs[k], ours[k]) for k in theirs), name
    # The same weights draw the same picture, give or take one level where a tensor read from
    # the folder sits unaligned in its file and the CPU kernels sum in another order.
    refiner = architecture == "sdxl-refiner"
    assert np.abs(draw(from_file, refiner) - draw(from_folder, refiner)).max() <= 1


def test_an_a1111_inpainting_checkpoint_is_unavailable_for_a_reason_a_user_understands(
    tmp_path: Path, demo_models: Path
) -> None:
    folder = at_real_depth(demo_models / "demo-sd15", tmp_path / "deep", "sd15")
    weights = a1111_checkpoint(folder, "sd15")
    conv_in = weights["model.diffusion_model.input_blocks.0.0.weight"]
    # An inpainting UNet also takes the mask and the masked picture's latents: 4 + 1 + 4.
    weights["model.diffusion_model.input_blocks.0.0.weight"] = conv_in.repeat(1, 3, 1, 1)[
        :, :9
    ].contiguous()
    single = tmp_path / "sd15-inpainting.safetensors"
    save_file(weights, single)
    source = {"single_file": str(single), "config": str(folder)}
    cache = ModelCache(registry_of({"inpaint": {"architecture": "sd15", "source": source}}))
    with pytest.raises(ModelUnavailable, match=r"is an inpainting UNet \(9 input channels\)"):
        cache.get("inpaint")
    assert "inpaint" in cache.unavailable


def test_an_a1111_inpainting_checkpoint_registered_as_one_loads_and_inpaints(
    tmp_path: Path, demo_models: Path
) -> None:
    folder = at_real_depth(demo_models / "demo-inpainting" / "sd15", tmp_path / "deep", "sd15")
    single = tmp_path / "sd15-inpainting.safetensors"
    save_file(a1111_checkpoint(folder, "sd15"), single)
    source = {"single_file": str(single), "config": str(folder)}
    entry = {"architecture": "sd15", "variant": "inpainting", "source": source}
    model = ModelCache(registry_of({"inpaint": entry})).get("inpaint")
    assert model.text.unet.config.in_channels == 9
    picture = Image.new("RGB", (64, 64), (120, 80, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = model.inpaint(
        "a window", image=picture, mask_image=mask, num_inference_steps=2, height=64, width=64,
        generator=torch.Generator().manual_seed(0), output_type="np",
    ).images[0]  # fmt: skip
    assert np.isfinite(out).all()


def test_a_damaged_gguf_file_or_one_of_another_architecture_is_unavailable_for_a_reason(
    tmp_path: Path, demo_models: Path
) -> None:
    gguf_file = demo_models / "demo-quantized" / "demo-flux-Q8_0.gguf"
    truncated = tmp_path / "flux1-dev-Q8_0.gguf"
    truncated.write_bytes(gguf_file.read_bytes()[:50_000])  # a download cut short
    models = {
        "q8": {"architecture": "flux",
               "source": {"single_file": str(truncated), "config": str(demo_models / "demo-flux")}},
        # A Flux GGUF file registered as SD3.5 (whose GGUF files are read too).
        "sd35-q8": {"architecture": "sd35",
                    "source": {"single_file": str(gguf_file),
                               "config": str(demo_models / "demo-sd35")}},
    }  # fmt: skip
    cache = ModelCache(registry_of(models))
    with pytest.raises(ModelUnavailable, match=r"is a damaged GGUF file \(truncated\?\)"):
        cache.get("q8")
    # The file's metadata says Flux: the entry's architecture is refused first.
    with pytest.raises(ModelUnavailable, match="is a flux checkpoint, but the registry says sd35"):
        cache.get("sd35-q8")
