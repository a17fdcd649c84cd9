"""SD1.5's and SDXL's inpainting checkpoints are told apart from the ordinary ones by their
UNet's input channels, against the registry's `variant: inpainting`."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import DiffusionPipeline

from contract.registry import ModelEntry
from workers.families import ArchitectureMismatch
from workers.families.sd import check_inpainting


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
