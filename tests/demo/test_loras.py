"""The demo LoRAs are LoRAs in diffusers' layout, of the architecture they were made for."""

from __future__ import annotations

from pathlib import Path

from contract.safetensors_header import read_header
from demo.loras import build_flux_lora, build_sd15_lora
from workers.checkpoint_probe import diagnose


def test_the_demo_loras_are_loras_in_diffusers_layout(demo_models: Path, tmp_path: Path) -> None:
    sd15 = build_sd15_lora(demo_models, tmp_path / "sd15.safetensors")
    flux = build_flux_lora(demo_models, tmp_path / "flux.safetensors")
    for lora in (sd15, flux):
        assert "is a LoRA, not a checkpoint" in (diagnose(lora) or "")
    assert all(k.startswith("unet.") for k in read_header(sd15) or {} if k != "__metadata__")
    flux_keys = [k for k in read_header(flux) or {} if k != "__metadata__"]
    assert flux_keys
    assert all(k.startswith("transformer.") for k in flux_keys)
