"""Flux's family: dev and schnell told apart, in the registry, the weights and the config folder
of a single file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.helpers import registry_of
from workers.models.cache import ModelCache, ModelUnavailable


def schnell_config(demo_models: Path, tmp_path: Path) -> Path:
    """demo-flux as Flux schnell: the transformer without its guidance embedding."""
    folder = tmp_path / "schnell-config"
    shutil.copytree(demo_models / "demo-flux", folder)
    config_file = folder / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config["guidance_embeds"] = False
    config_file.write_text(json.dumps(config))
    weights_file = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights = {k: v for k, v in load_file(weights_file).items() if "guidance_embedder" not in k}
    save_file(weights, weights_file)
    return folder


def test_flux_dev_and_schnell_are_told_apart_and_a_mismatch_names_both(
    tmp_path: Path, demo_models: Path
) -> None:
    dev_weights = load_file(
        demo_models / "demo-flux" / "transformer" / "diffusion_pytorch_model.safetensors"
    )
    dev_file = tmp_path / "flux1-dev.safetensors"
    save_file(dev_weights, dev_file)
    schnell = schnell_config(demo_models, tmp_path)
    # A dev file with a schnell config folder silently dropped the guidance weights.
    source = {"single_file": str(dev_file), "config": str(schnell)}
    cache = ModelCache(registry_of({"mixed": {"architecture": "flux", "source": source}}))
    with pytest.raises(ModelUnavailable) as mixed:
        cache.get("mixed")
    message = str(mixed.value)
    assert "flux1-dev.safetensors is a Flux dev checkpoint (with guidance embeddings)" in message
    assert "is for Flux schnell; point config at a dev folder" in message
    # The registry's variant is checked against the weights, too.
    folder = {"folder": str(demo_models / "demo-flux")}
    wrong = registry_of({"f": {"architecture": "flux", "variant": "schnell", "source": folder}})
    with pytest.raises(ModelUnavailable, match="the registry says Flux schnell, but the weights"):
        ModelCache(wrong).get("f")
    right = registry_of(
        {"f": {"architecture": "flux", "variant": "schnell", "source": {"folder": str(schnell)}}}
    )
    pipe = ModelCache(right).get("f").text
    assert not pipe.transformer.config.guidance_embeds
