"""The registry's sources load real diffusers pipelines; the demo models keep real structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from contract.registry import ModelRegistry
from workers.runtime import ModelCache, ModelUnavailable


def registry_of(models: dict[str, dict[str, object]]) -> ModelRegistry:
    return ModelRegistry.model_validate({"models": models})


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
