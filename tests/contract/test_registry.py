"""The registry file: names from keys, paths relative to the file, known architectures only."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.registry import ModelRegistry


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
