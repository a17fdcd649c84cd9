"""A single file's architecture, told from its header's keys before any weight is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workers.checkpoint_probe import probe_architecture


def checkpoint(tmp_path: Path, *keys: str, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    save_file({key: torch.zeros(1) for key in keys}, path)
    return path


@pytest.mark.parametrize(
    ("key", "architecture"),
    [
        ("model.diffusion_model.output_blocks.11.0.skip_connection.weight", "sd15"),
        ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias", "sdxl"),
        ("conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias", "sdxl-refiner"),
        ("double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
        ("model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
        ("single_transformer_blocks.0.attn.norm_k.weight", "flux"),
    ],
)
def test_marker_keys_name_the_architecture(tmp_path: Path, key: str, architecture: str) -> None:
    assert probe_architecture(checkpoint(tmp_path, key, "some.other.weight")) == architecture


def test_unknown_keys_and_other_formats_are_not_guessed(tmp_path: Path) -> None:
    assert probe_architecture(checkpoint(tmp_path, "lora_unet_down.weight")) is None
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not read")
    assert probe_architecture(pickle) is None
