"""The registry's sources load real diffusers pipelines; the demo models keep real structure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

from contract.registry import ModelRegistry
from workers.demo_models import ensure_built
from workers.runtime import ModelCache, ModelUnavailable


def registry_of(models: dict[str, dict[str, object]]) -> ModelRegistry:
    return ModelRegistry.model_validate({"models": models})


@pytest.mark.parametrize(
    ("name", "channels", "scaling", "shift"),
    [
        ("demo-sd15", 4, 0.18215, None),
        ("demo-sdxl", 4, 0.13025, None),
        ("demo-sdxl-refiner", 4, 0.13025, None),
        ("demo-flux", 16, 0.3611, 0.1159),
    ],
)
def test_demo_models_keep_each_architectures_latent_space(
    demo_models: Path, name: str, channels: int, scaling: float, shift: float | None
) -> None:
    pipe = DiffusionPipeline.from_pretrained(demo_models / name, local_files_only=True)
    vae = pipe.vae.config
    assert vae.latent_channels == channels
    assert vae.scaling_factor == scaling
    assert vae.shift_factor == shift
    assert 2 ** (len(vae.block_out_channels) - 1) == 8  # the real VAE downscale


def test_demo_architectures_are_true_to_the_real_ones(demo_models: Path) -> None:
    flux = DiffusionPipeline.from_pretrained(demo_models / "demo-flux", local_files_only=True)
    assert flux.transformer.config.in_channels == 64  # 16 channels packed 2x2
    assert flux.transformer.config.guidance_embeds
    assert type(flux.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert type(flux.text_encoder_2).__name__ == "T5EncoderModel"
    sdxl = DiffusionPipeline.from_pretrained(demo_models / "demo-sdxl", local_files_only=True)
    assert sdxl.unet.config.addition_embed_type == "text_time"
    assert sdxl.text_encoder is not None
    assert sdxl.text_encoder_2 is not None
    refiner = DiffusionPipeline.from_pretrained(demo_models / "demo-sdxl-refiner")
    assert refiner.text_encoder is None  # text_encoder_2 only, like the real refiner
    assert refiner.config.requires_aesthetics_score
    # Base and refiner share one VAE, as the real SDXL pair does.
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            sdxl.vae.state_dict().values(), refiner.vae.state_dict().values(), strict=True
        )
    )
    sd15 = DiffusionPipeline.from_pretrained(demo_models / "demo-sd15")
    assert sd15.tokenizer.model_max_length == 77


def test_demo_build_is_deterministic(tmp_path: Path, demo_models: Path) -> None:
    ensure_built(tmp_path, ("demo-sd15",))

    def digest(root: Path) -> str:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "demo_build.json")
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    assert digest(tmp_path / "demo-sd15") == digest(demo_models / "demo-sd15")


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


def test_registry_paths_are_relative_to_the_file_and_latent_space_follows_architecture(
    tmp_path: Path,
) -> None:
    (tmp_path / "reg.yaml").write_text(
        "models:\n  a:\n    architecture: sdxl-refiner\n    source: {folder: models/a}\n"
    )
    registry = ModelRegistry.load(tmp_path / "reg.yaml")
    entry = registry.models["a"]
    assert entry.source.folder == (tmp_path / "models" / "a").resolve()  # type: ignore[union-attr]
    assert entry.latent_space.name == "sdxl"


def test_registry_rejects_unknown_architectures(tmp_path: Path) -> None:
    (tmp_path / "reg.yaml").write_text(
        "models:\n  a:\n    architecture: sd9\n    source: {folder: x}\n"
    )
    with pytest.raises(ValueError, match="unknown architecture 'sd9'"):
        ModelRegistry.load(tmp_path / "reg.yaml")
