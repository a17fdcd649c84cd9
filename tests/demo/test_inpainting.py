"""The tiny inpainting checkpoints: demo-sd15's and demo-sdxl's pipelines, a 9-channel UNet in
each, everything else the ordinary demo model's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_an_inpainting_demo_is_its_demo_model_with_a_9_channel_unet(
    demo_models: Path, arch: str
) -> None:
    folder = demo_models / "demo-inpainting" / arch
    unet = json.loads((folder / "unet" / "config.json").read_text())
    ordinary = json.loads((demo_models / f"demo-{arch}" / "unet" / "config.json").read_text())
    assert (unet["in_channels"], ordinary["in_channels"]) == (9, 4)

    def settings(config: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in config.items() if k != "in_channels" and not k.startswith("_")}

    assert settings(unet) == settings(ordinary)
    weights = "diffusion_pytorch_model.safetensors"
    vae, own_vae = (
        load_file(folder / "vae" / weights),
        load_file(demo_models / f"demo-{arch}" / "vae" / weights),
    )
    assert all((vae[k] == own_vae[k]).all() for k in own_vae)
