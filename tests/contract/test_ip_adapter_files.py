"""An IP-Adapter's architecture from its header, in the layouts they ship in (h94's for SD1.5
and SDXL, diffusers' and XLabs' for Flux, InstantX's for SD3.5), never from its file name; the
image encoder width it takes; IP-Adapter folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from contract.ip_adapter_files import discover_ip_adapters, encoder_width, probe_ip_adapter
from contract.registry import ModelRegistry


def header_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.zeros(shape, dtype=torch.float16) for key, shape in shapes.items()}, path)
    return path


def encoder_folder(path: Path, projection: int, hidden: int) -> Path:
    path.mkdir(parents=True)
    config = {"model_type": "clip_vision_model", "projection_dim": projection,
              "hidden_size": hidden}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("shapes", "architecture", "image_input"),
    [
        # h94's ip-adapter_sd15: 4 tokens of CLIP-L's 768, from ViT-H's 1024-wide embedding
        ({"image_proj.proj.weight": (3072, 1024), "image_proj.norm.weight": (768,),
          "ip_adapter.1.to_k_ip.weight": (320, 768)}, "sd15", (1024, "projected")),
        # h94's ip-adapter_sdxl: 2048 (CLIP-L + CLIP-G), from ViT-bigG's 1280
        ({"image_proj.proj.weight": (8192, 1280), "ip_adapter.1.to_k_ip.weight": (640, 2048)},
         "sdxl", (1280, "projected")),
        # h94's ip-adapter-plus_sd15: a resampler over ViT-H's 1280-wide hidden states
        ({"image_proj.proj_in.weight": (768, 1280), "image_proj.latents": (1, 16, 768),
          "ip_adapter.1.to_k_ip.weight": (320, 768)}, "sd15", (1280, "hidden")),
        # diffusers' Flux (converted from XLabs): T5's 4096
        ({"image_proj.proj.weight": (16384, 768), "ip_adapter.0.to_k_ip.weight": (3072, 4096),
          "ip_adapter.0.to_k_ip.bias": (3072,)}, "flux", (768, "projected")),
        # XLabs' own Flux layout
        ({"ip_adapter_proj_model.proj.weight": (16384, 768),
          "double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight": (3072, 4096)},
         "flux", (None, None)),
        # InstantX's SD3.5: a timestep-modulated norm per layer
        ({"image_proj.proj_in.weight": (1280, 1152), "ip_adapter.0.norm_ip.linear.weight":
          (4608, 1536), "ip_adapter.0.to_k_ip.weight": (2432, 2432)}, "sd35", (1152, "hidden")),
        # a tiny one: 32-wide image keys show no architecture
        ({"image_proj.proj.weight": (128, 32), "ip_adapter.1.to_k_ip.weight": (32, 32)}, None,
         (32, "projected")),
    ],
)  # fmt: skip
def test_the_architecture_and_image_input_are_read_from_the_keys(
    tmp_path: Path,
    shapes: dict[str, tuple[int, ...]],
    architecture: str | None,
    image_input: tuple[int | None, str | None],
) -> None:
    # the file's name says sdxl whatever it holds: names are not read
    probed = probe_ip_adapter(header_file(tmp_path / "ip-adapter_sdxl.safetensors", shapes))
    assert probed is not None
    assert probed.architecture == architecture
    assert (probed.image_width, probed.image_output) == image_input


def test_a_file_without_image_keys_is_no_ip_adapter(tmp_path: Path) -> None:
    lora = header_file(tmp_path / "ip.safetensors", {"lora_unet_down.lora_down.weight": (4, 8)})
    assert probe_ip_adapter(lora) is None
    assert probe_ip_adapter(tmp_path / "missing.safetensors") is None


def test_the_encoder_width_is_read_from_its_config(tmp_path: Path) -> None:
    folder = encoder_folder(tmp_path / "image_encoder", projection=1024, hidden=1280)
    assert encoder_width(folder, "projected") == 1024
    assert encoder_width(folder, "hidden") == 1280
    assert encoder_width(tmp_path / "nowhere", "projected") is None


def test_a_folder_lists_the_adapters_that_show_their_architecture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sd15 = {"image_proj.proj.weight": (3072, 1024), "ip_adapter.1.to_k_ip.weight": (320, 768)}
    header_file(tmp_path / "ip-adapter_sd15.safetensors", sd15)
    header_file(tmp_path / "tiny.safetensors", {"ip_adapter.1.to_k_ip.weight": (32, 32)})
    header_file(tmp_path / "bad name!.safetensors", sd15)
    encoder_folder(tmp_path / "image_encoder", 1024, 1280)
    with caplog.at_level(logging.WARNING, "imagegen.registry"):
        found = discover_ip_adapters(tmp_path)
    assert {n: e["architecture"] for n, e in found.items()} == {"ip-adapter_sd15": "sd15"}
    assert "tiny.safetensors left out: it does not show its architecture" in caplog.text
    assert "bad name!.safetensors left out: its name must match" in caplog.text


SD15 = {"image_proj.proj.weight": (3072, 1024), "ip_adapter.1.to_k_ip.weight": (320, 768)}


def load(root: Path, **sections: object) -> ModelRegistry:
    file = root / "registry.yaml"
    models = {"m": {"architecture": "sd15", "source": {"folder": "m"}}}
    file.write_text(yaml.safe_dump({"models": models, **sections}))
    return ModelRegistry.load(file)


def test_the_registry_checks_each_ip_adapter_against_its_entry_and_its_encoder(
    tmp_path: Path,
) -> None:
    h94 = tmp_path / "models"
    h94.mkdir()
    adapter = header_file(h94 / "ip-adapter_sd15.safetensors", SD15)
    encoder_folder(h94 / "image_encoder", projection=1024, hidden=1280)
    found = load(tmp_path, ip_adapters={"ip": {"file": str(adapter)}}).ip_adapters["ip"]
    assert (found.architecture, found.architecture_from) == ("sd15", "header")
    assert found.image_encoder == h94 / "image_encoder"  # the one beside it, as h94 lays out
    with pytest.raises(ValueError, match=r"the registry says sdxl, but ip-adapter_sd15\.safet"):
        load(tmp_path, ip_adapters={"ip": {"architecture": "sdxl", "file": str(adapter)}})
    big_g = encoder_folder(tmp_path / "bigG", projection=1280, hidden=1664)
    with pytest.raises(ValueError, match="takes a 1024-wide image embedding, but the image "):
        load(tmp_path, ip_adapters={"ip": {"file": str(adapter), "image_encoder": str(big_g)}})
    lora = header_file(tmp_path / "l.safetensors", {"x.lora_down.weight": (4, 768)})
    with pytest.raises(ValueError, match="holds no IP-Adapter"):
        load(tmp_path, ip_adapters={"l": {"architecture": "sd15", "file": str(lora)}})
    flux = header_file(tmp_path / "flux.safetensors", {"ip_adapter.0.to_k_ip.weight": (8, 4096)})
    with pytest.raises(ValueError, match="flux IP-Adapters are not served here yet; those of sd15"):
        load(tmp_path, ip_adapters={"f": {"file": str(flux)}})
    with pytest.raises(ValueError, match="cannot be read here; write its architecture"):
        load(tmp_path, ip_adapters={"x": {"file": str(tmp_path / "elsewhere.safetensors")}})
    elsewhere = {"architecture": "sdxl", "file": "/remote/ip.safetensors"}
    unread = load(tmp_path, ip_adapters={"x": elsewhere}).ip_adapters["x"]
    assert unread.architecture_from == "registry"


def test_ip_adapter_folders_add_theirs_with_the_encoder_beside_them(tmp_path: Path) -> None:
    folder = tmp_path / "ipadapter"
    folder.mkdir()
    header_file(folder / "ip-adapter_sd15.safetensors", SD15)
    encoder_folder(folder / "image_encoder", projection=1024, hidden=1280)
    registry = load(tmp_path, ip_adapter_folders=[str(folder)])
    [(name, entry)] = registry.ip_adapters.items()
    assert (name, entry.architecture, entry.image_encoder) == (
        "ip-adapter_sd15",
        "sd15",
        folder / "image_encoder",
    )


def test_a_folders_adapters_that_do_not_fit_are_left_out_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    header_file(folder / "ip-adapter_sd15.safetensors", SD15)
    # h94's vit-G adapter sits beside the ViT-H encoder it does not take
    header_file(folder / "ip-adapter_sd15_vit-G.safetensors",
                {**SD15, "image_proj.proj.weight": (3072, 1280)})  # fmt: skip
    header_file(folder / "flux-ip.safetensors", {"ip_adapter.0.to_k_ip.weight": (8, 4096)})
    encoder_folder(folder / "image_encoder", projection=1024, hidden=1280)
    with caplog.at_level(logging.WARNING, "imagegen.registry"):
        registry = load(tmp_path, ip_adapter_folders=[str(folder)])
    assert list(registry.ip_adapters) == ["ip-adapter_sd15"]
    assert "ip-adapter_sd15_vit-G.safetensors left out" in caplog.text
    assert "flux IP-Adapters are not served here yet" in caplog.text
