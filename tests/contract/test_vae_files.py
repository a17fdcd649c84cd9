"""A VAE's latent space against its files: the channels a header shows in every layout VAE
files ship in (diffusers', LDM's as A1111's `sdxl_vae.safetensors`, under a checkpoint's prefix),
the space a diffusers folder's config names, and a registry that will not load a VAE whose file
contradicts its entry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from contract.registry import ModelRegistry
from contract.vae_files import VaeProbe, probe_vae

MODEL = {"m": {"architecture": "sd15", "source": {"folder": "m"}}}


def vae_file(path: Path, channels: int, key: str = "decoder.conv_in.weight") -> Path:
    # The decoder's first convolution takes the latents: (out, channels, 3, 3).
    tensors = {
        key: torch.zeros(8, channels, 3, 3),
        "decoder.conv_out.weight": torch.zeros(3, 8, 3, 3),
    }
    save_file(tensors, path)
    return path


def vae_folder(path: Path, channels: int, scaling: float, shift: float | None = None) -> Path:
    path.mkdir()
    config = {"_class_name": "AutoencoderKL", "latent_channels": channels,
              "scaling_factor": scaling, "shift_factor": shift}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    vae_file(path / "diffusion_pytorch_model.safetensors", channels)
    return path


def load(tmp_path: Path, **sections: object) -> ModelRegistry:
    file = tmp_path / "registry.yaml"
    file.write_text(yaml.safe_dump({"models": MODEL, **sections}))
    return ModelRegistry.load(file)


@pytest.mark.parametrize(
    "key",
    [
        "decoder.conv_in.weight",  # diffusers' layout and LDM's name it alike
        "first_stage_model.decoder.conv_in.weight",  # inside an SD checkpoint
        "vae.decoder.conv_in.weight",
    ],
)
@pytest.mark.parametrize("channels", [4, 16])
def test_a_headers_channels_are_read_in_each_layout(
    tmp_path: Path, key: str, channels: int
) -> None:
    assert probe_vae(vae_file(tmp_path / "v.safetensors", channels, key)) == VaeProbe(channels)


def test_the_demo_vaes_in_both_layouts_show_4_channels(demo_models: Path) -> None:
    for name in ("demo-sd15-vae", "demo-sdxl-vae"):  # diffusers' layout, LDM's
        assert probe_vae(demo_models / "demo-vaes" / f"{name}.safetensors") == VaeProbe(4)


@pytest.mark.parametrize(
    ("model", "space"),
    [("demo-sd15", "sd1"), ("demo-sdxl", "sdxl"), ("demo-flux", "flux"), ("demo-sd35", "sd3")],
)
def test_a_diffusers_folders_config_names_its_latent_space(
    demo_models: Path, model: str, space: str
) -> None:
    probe = probe_vae(demo_models / model / "vae")
    assert probe is not None
    assert probe.latent_space == space


def test_a_file_whose_channels_contradict_its_entry_stops_the_registry(tmp_path: Path) -> None:
    flux = vae_file(tmp_path / "ae.safetensors", 16)
    said = r"the registry says sdxl \(4 channels\), but ae\.safetensors decodes 16-channel"
    with pytest.raises(ValueError, match=said + r" latents \(a VAE of flux or sd3\)"):
        load(tmp_path, vaes={"ae": {"latent_space": "sdxl", "file": str(flux)}})


def test_a_file_that_holds_no_vae_stops_the_registry(tmp_path: Path) -> None:
    other = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 768)}, other)
    with pytest.raises(ValueError, match="holds no VAE decoder"):
        load(tmp_path, vaes={"x": {"latent_space": "sd1", "file": str(other)}})
    pickle = tmp_path / "vae.pt"
    pickle.write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ValueError, match="convert it to safetensors"):
        load(tmp_path, vaes={"x": {"latent_space": "sd1", "file": str(pickle)}})


def test_a_4_channel_file_must_say_which_4_channel_space(tmp_path: Path) -> None:
    four = vae_file(tmp_path / "v.safetensors", 4)
    with pytest.raises(ValueError, match="which sd1 and sdxl have; write its latent_space"):
        load(tmp_path, vaes={"v": {"file": str(four)}})
    vae = load(tmp_path, vaes={"v": {"file": str(four), "latent_space": "sdxl"}}).vaes["v"]
    assert (vae.latent_space, vae.latent_space_from, vae.channels_checked) == (
        "sdxl", "registry", True
    )  # fmt: skip


def test_a_file_not_readable_here_keeps_the_registrys_word(tmp_path: Path) -> None:
    elsewhere = str(tmp_path / "on-the-gpu-host.safetensors")
    with pytest.raises(ValueError, match="cannot be read here; write its latent_space"):
        load(tmp_path, vaes={"v": {"file": elsewhere}})
    vae = load(tmp_path, vaes={"v": {"file": elsewhere, "latent_space": "sd1"}}).vaes["v"]
    assert (vae.latent_space, vae.channels_checked) == ("sd1", False)


def test_a_folders_config_is_its_latent_space_and_is_checked(tmp_path: Path) -> None:
    folder = vae_folder(tmp_path / "sdxl-vae", 4, 0.13025)
    vae = load(tmp_path, vaes={"xl": {"folder": str(folder)}}).vaes["xl"]
    assert (vae.latent_space, vae.latent_space_from) == ("sdxl", "header")
    with pytest.raises(ValueError, match="the registry says sd1, but sdxl-vae's config is that of"):
        load(tmp_path, vaes={"xl": {"folder": str(folder), "latent_space": "sd1"}})


def test_vae_folders_add_their_files_with_the_folders_latent_space(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "vae"
    folder.mkdir()
    vae_file(folder / "sd15-mse.safetensors", 4)
    vae_file(folder / "flux-ae.safetensors", 16)  # not sd1: left out, said why
    (folder / "notes.txt").write_text("not a VAE")
    with caplog.at_level(logging.WARNING, "imagegen.registry"):
        registry = load(tmp_path, vae_folders=[{"folder": str(folder), "latent_space": "sd1"}])
    assert sorted(registry.vaes) == ["sd15-mse"]
    assert registry.vaes["sd15-mse"].latent_space == "sd1"
    assert "flux-ae.safetensors left out" in caplog.text
    assert "16-channel" in caplog.text
