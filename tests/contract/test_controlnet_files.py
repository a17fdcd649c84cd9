"""A ControlNet's architecture from its header or config, in the layouts they ship in (A1111's
LDM names, diffusers', XLabs' and InstantX's for Flux, SD3's), never from its file name;
ControlNet folders; sd-webui-controlnet's short hash."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from contract.controlnet_files import controlnet_hash, discover_controlnets, probe_controlnet
from contract.registry import ModelRegistry

MODEL = {"m": {"architecture": "sd15", "source": {"folder": "m"}}}
LDM_TO_K = "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
DIFFUSERS_TO_K = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"


def header_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, path)
    return path


@pytest.mark.parametrize(
    ("shapes", "architecture"),
    [
        # A1111's (lllyasviel's control_v11p_sd15_canny.pth, as safetensors): LDM names
        ({"control_model.input_hint_block.0.weight": (16, 3, 3, 3), LDM_TO_K: (320, 768)}, "sd15"),
        # diffusers' SDXL (controlnet-canny-sdxl-1.0): cross-attention from CLIP-L + CLIP-G
        ({"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
          DIFFUSERS_TO_K: (640, 2048)}, "sdxl"),
        # diffusers' Flux (InstantX, Shakker): its own input embedder
        ({"controlnet_x_embedder.weight": (3072, 64),
          "transformer_blocks.0.attn.to_k.weight": (3072, 3072)}, "flux"),
        # XLabs' Flux: BFL's block names, and pos_embed_input
        ({"pos_embed_input.weight": (3072, 64),
          "double_blocks.0.img_attn.qkv.weight": (9216, 3072)}, "flux"),
        # SD3's: patched input embedder
        ({"pos_embed_input.proj.weight": (1536, 16, 2, 2),
          "transformer_blocks.0.attn.to_k.weight": (1536, 1536)}, "sd35"),
        # a tiny one: a ControlNet whose 32-wide keys show no architecture
        ({"controlnet_cond_embedding.conv_in.weight": (8, 3, 3, 3),
          DIFFUSERS_TO_K: (32, 32)}, None),
    ],
)  # fmt: skip
def test_a_controlnets_architecture_is_read_from_its_keys_not_its_name(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], architecture: str | None
) -> None:
    # Named as sd-webui-controlnet would misread it: the keys decide.
    path = header_file(tmp_path / "control_xl_flux_sd15.safetensors", shapes)
    assert probe_controlnet(path) == (True, architecture)


def test_a_lora_or_a_unet_is_no_controlnet(tmp_path: Path) -> None:
    lora = header_file(
        tmp_path / "l.safetensors", {"lora_unet_x_attn2_to_k.lora_down.weight": (4, 768)}
    )
    assert probe_controlnet(lora) == (False, None)


def test_a_folders_config_names_its_architecture(tmp_path: Path, demo_models: Path) -> None:
    folder = tmp_path / "canny-sdxl"
    folder.mkdir()
    config = {"_class_name": "ControlNetModel", "cross_attention_dim": 2048}
    (folder / "config.json").write_text(json.dumps(config))
    assert probe_controlnet(folder) == (True, "sdxl")
    built = demo_models / "demo-controlnets"
    assert probe_controlnet(built / "demo-flux-canny") == (True, "flux")  # its class says
    assert probe_controlnet(built / "demo-sd15-canny") == (True, None)  # 32 wide: no row's


def load(tmp_path: Path, **sections: object) -> ModelRegistry:
    file = tmp_path / "registry.yaml"
    file.write_text(yaml.safe_dump({"models": MODEL, **sections}))
    return ModelRegistry.load(file)


def test_the_registry_checks_each_controlnet_against_its_entry(tmp_path: Path) -> None:
    shapes = {
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        DIFFUSERS_TO_K: (640, 2048),
    }
    xl = header_file(tmp_path / "xl.safetensors", shapes)
    found = load(tmp_path, controlnets={"xl": {"file": str(xl)}}).controlnets["xl"]
    assert (found.architecture, found.architecture_from) == ("sdxl", "header")
    with pytest.raises(ValueError, match=r"the registry says sd15, but xl\.safetensors is a sdxl"):
        load(tmp_path, controlnets={"xl": {"architecture": "sd15", "file": str(xl)}})
    lora = header_file(tmp_path / "l.safetensors", {"x.lora_down.weight": (4, 768)})
    with pytest.raises(ValueError, match="holds no ControlNet"):
        load(tmp_path, controlnets={"l": {"architecture": "sd15", "file": str(lora)}})
    sd3 = header_file(tmp_path / "sd3.safetensors", {"pos_embed_input.proj.weight": (8, 16, 2, 2)})
    with pytest.raises(ValueError, match="sd35 ControlNets are not served here yet; those of sd15"):
        load(tmp_path, controlnets={"sd3": {"file": str(sd3)}})


def test_controlnet_folders_add_those_that_show_their_architecture(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "controlnet"
    folder.mkdir()
    header_file(folder / "canny15.safetensors", {"control_model.input_hint_block.0.weight":
                                                 (16, 3, 3, 3), LDM_TO_K: (320, 768)})  # fmt: skip
    header_file(folder / "tiny.safetensors", {"controlnet_x.weight": (2, 2)})
    with caplog.at_level(logging.WARNING, "imagegen.registry"):
        found = discover_controlnets(folder)
    assert {n: e["architecture"] for n, e in found.items()} == {"canny15": "sd15"}
    assert "tiny.safetensors left out: it does not show its architecture" in caplog.text


def test_the_short_hash_is_sd_webui_controlnets(tmp_path: Path) -> None:
    data = bytes(range(256)) * (0x120000 // 256)
    (tmp_path / "c.safetensors").write_bytes(data)
    expected = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert controlnet_hash(tmp_path / "c.safetensors") == expected
    assert controlnet_hash(tmp_path / "missing.safetensors") is None
