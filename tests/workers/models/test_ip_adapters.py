"""Loading a registered IP-Adapter: built once per model from its file, the model's UNet left as
it was; a file that does not fit the UNet, or an encoder that does not fit the file, fails with
a reason (ModelUnavailable); IP-Adapters share the memory budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from contract.registry import IpAdapterEntry, ModelRegistry
from workers.models.cache import ModelCache, ModelUnavailable


def entry(name: str, architecture: str, file: Path, encoder: Path) -> IpAdapterEntry:
    return IpAdapterEntry(name=name, architecture=architecture, file=file, image_encoder=encoder)


def test_an_ip_adapter_is_built_once_for_its_model_and_leaves_the_unet_as_it_was(
    registry: ModelRegistry,
) -> None:
    cache = ModelCache(registry)
    model = cache.get("demo-sd15")
    unet = model.text.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    own = dict(unet.attn_processors)
    loaded = cache.ip_adapter("demo-sd15-ip", model)
    assert cache.ip_adapter("demo-sd15-ip", model) is loaded  # once
    # one processor per cross-attention layer, with the file's image keys
    cross = [n for n in own if n.endswith("attn2.processor")]
    assert sorted(loaded.processors) == sorted(cross)
    assert loaded.feature_extractor.crop_size == {"height": 32, "width": 32}  # the encoder's
    assert all(unet.attn_processors[n] is p for n, p in own.items())
    after = unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_file_that_does_not_fit_the_unet_fails_with_a_reason(
    registry: ModelRegistry, demo_models: Path, tmp_path: Path
) -> None:
    folder = demo_models / "demo-ip-adapters"
    weights = load_file(folder / "demo-sd15-ip.safetensors")
    torn = tmp_path / "torn.safetensors"
    save_file({k: v for k, v in weights.items() if "to_v_ip" not in k}, torn)
    # the SDXL adapter's 64-wide keys on the 32-wide SD1.5 UNet, declared sd15
    wide = folder / "demo-sdxl-ip.safetensors"
    entries = {
        "torn": entry("torn", "sd15", torn, folder / "image_encoder"),
        "wide": entry("wide", "sd15", wide, folder / "image_encoder"),
    }
    cache = ModelCache(registry.model_copy(update={"ip_adapters": entries}))
    model = cache.get("demo-sd15")
    for name in entries:
        with pytest.raises(ModelUnavailable, match=f"IP-Adapter '{name}' could not be loaded"):
            cache.ip_adapter(name, model)


def test_ip_adapters_count_in_the_memory_budget_and_make_room_as_models_do(
    registry: ModelRegistry,
) -> None:
    cache = ModelCache(registry)
    model = cache.get("demo-sd15")
    alone = cache.resident_bytes()
    cache.ip_adapter("demo-sd15-ip", model)
    assert cache.resident_bytes() > alone  # counted, the image encoder with it
    cache.budget_bytes = cache.resident_bytes()  # room for no more
    cache.pinned = frozenset({"demo-sd15"})
    cache.get("demo-sdxl")
    assert cache.loaded() == ["demo-sd15", "demo-sdxl"]
    assert not cache._ip_adapters  # made room, least recently used first


def test_making_room_for_an_ip_adapter_spares_the_running_stages_loras(
    registry: ModelRegistry, demo_models: Path
) -> None:
    # The stage activates its LoRAs before its IP-Adapter loads: they must survive its room.
    cache = ModelCache(registry)
    model = cache.get("demo-sd15")
    lora = demo_models / "demo-loras" / "demo-sd15-lora.safetensors"
    model.use_adapter("demo-sd15-lora", lora, keep={"demo-sd15-lora"})
    cache.budget_bytes = cache.resident_bytes()  # room for nothing more
    cache.pinned = frozenset({"demo-sd15"})
    cache.ip_adapter("demo-sd15-ip", model)
    assert "demo-sd15-lora" in model.adapters
