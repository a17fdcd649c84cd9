"""The demo models as a registry the worker's own code loads, in this process, on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.registry import ModelRegistry
from demo.models import DEMO_MODELS


@pytest.fixture(scope="session")
def registry(demo_models: Path) -> ModelRegistry:
    names = DEMO_MODELS
    return ModelRegistry.model_validate(
        {
            "models": {
                n: {
                    "architecture": n.removeprefix("demo-"),
                    "source": {"folder": str(demo_models / n)},
                    "device": "cpu",
                }
                for n in names
            },
            "upscalers": {
                f.name.removesuffix(".safetensors"): {"file": str(f), "device": "cpu"}
                for f in sorted((demo_models / "demo-upscalers").glob("*.safetensors"))
            },
            "vaes": {
                f"{model}-vae": {
                    "latent_space": space,
                    "file": str(demo_models / "demo-vaes" / f"{model}-vae.safetensors"),
                }
                for model, space in (("demo-sd15", "sd1"), ("demo-sdxl", "sdxl"))
            },
            "embeddings": {
                f"{model}-emb": {
                    "architecture": model.removeprefix("demo-"),
                    "file": str(demo_models / "demo-embeddings" / f"{model}-emb.safetensors"),
                }
                for model in ("demo-sd15", "demo-sdxl")
            },
            "controlnets": {
                f"{model}-canny": {
                    "architecture": model.removeprefix("demo-"),
                    "file": str(demo_models / "demo-controlnets" / f"{model}-canny"),
                }
                for model in ("demo-sd15", "demo-sdxl", "demo-flux")
            },
            "ip_adapters": {
                f"{model}-ip": {
                    "architecture": model.removeprefix("demo-"),
                    "file": str(demo_models / "demo-ip-adapters" / f"{model}-ip.safetensors"),
                    "image_encoder": str(demo_models / "demo-ip-adapters" / "image_encoder"),
                }
                for model in ("demo-sd15", "demo-sdxl")
            },
        }
    )
