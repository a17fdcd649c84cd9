"""Loading a registered ControlNet: a diffusers folder, or a UNet family's single file built on
the model's own UNet config (the same weights, to the byte, as its folder); a transformer's single
file is refused naming what to point at; ControlNets share the memory budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from contract.registry import ControlNetEntry, ModelRegistry
from tests.checkpoint_layouts import diffusers_controlnet_to_ldm
from workers.models.cache import ModelCache, ModelUnavailable


def entry(name: str, architecture: str, file: Path) -> ControlNetEntry:
    return ControlNetEntry(name=name, architecture=architecture, file=file)


@pytest.mark.parametrize("model", ["demo-sd15", "demo-sdxl"])
def test_a_unet_familys_single_file_loads_the_weights_of_its_folder(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path, model: str
) -> None:
    folder = demo_models / "demo-controlnets" / f"{model}-canny"
    single = tmp_path / f"{model}-canny.safetensors"
    save_file(load_file(folder / "diffusion_pytorch_model.safetensors"), single)
    arch = model.removeprefix("demo-")
    entries = {"folder": entry("folder", arch, folder), "file": entry("file", arch, single)}
    cache = ModelCache(registry.model_copy(update={"controlnets": entries}))
    loaded = cache.get(model)
    a, b = (cache.controlnet(n, loaded, {n}).module.state_dict() for n in ("folder", "file"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["demo-sd15", "demo-sdxl"])
def test_an_a1111_ldm_single_file_loads_the_weights_of_its_folder(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path, model: str
) -> None:
    # lllyasviel's layout (control_v11p_sd15_canny), converted back by diffusers' own converter
    # (and SDXL's size embedding, which that converter leaves out)
    folder = demo_models / "demo-controlnets" / f"{model}-canny"
    weights = load_file(folder / "diffusion_pytorch_model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    single = tmp_path / "control_canny.safetensors"
    save_file(diffusers_controlnet_to_ldm(weights, config), single)
    arch = model.removeprefix("demo-")
    entries = {"folder": entry("folder", arch, folder), "ldm": entry("ldm", arch, single)}
    cache = ModelCache(registry.model_copy(update={"controlnets": entries}))
    loaded = cache.get(model)
    a, b = (cache.controlnet(n, loaded, {n}).module.state_dict() for n in ("folder", "ldm"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_flux_controlnet_file_is_refused_naming_what_to_point_at(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    folder = demo_models / "demo-controlnets" / "demo-flux-canny"
    single = tmp_path / "flux-canny.safetensors"
    save_file(load_file(folder / "diffusion_pytorch_model.safetensors"), single)
    cache = ModelCache(
        registry.model_copy(update={"controlnets": {"f": entry("f", "flux", single)}})
    )
    with pytest.raises(ModelUnavailable, match="served from a diffusers folder"):
        cache.controlnet("f", cache.get("demo-flux"), {"f"})


def test_controlnets_count_in_the_memory_budget_and_make_room_as_models_do(
    registry: ModelRegistry,
) -> None:
    cache = ModelCache(registry)
    model = cache.get("demo-sd15")
    alone = cache.resident_bytes()
    cache.controlnet("demo-sd15-canny", model, {"demo-sd15-canny"})
    assert cache.resident_bytes() > alone  # counted
    cache.budget_bytes = cache.resident_bytes()  # room for no more
    cache.pinned = frozenset({"demo-sd15"})
    cache.get("demo-sdxl")
    assert cache.loaded() == ["demo-sd15", "demo-sdxl"]
    assert not cache._controlnets  # made room, least recently used first
