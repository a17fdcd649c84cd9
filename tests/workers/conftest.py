"""The demo models as a registry the worker's own code loads, in this process, on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.registry import ModelRegistry


@pytest.fixture(scope="session")
def registry(demo_models: Path) -> ModelRegistry:
    names = ("demo-sd15", "demo-sdxl", "demo-sdxl-refiner", "demo-flux")
    return ModelRegistry.model_validate(
        {
            "models": {
                n: {
                    "architecture": n.removeprefix("demo-"),
                    "source": {"folder": str(demo_models / n)},
                    "device": "cpu",
                }
                for n in names
            }
        }
    )
