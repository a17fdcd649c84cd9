"""A single file's architecture, told from its header's keys before any weight is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workers.models.checkpoint_probe import diagnose, probe_architecture


def checkpoint(tmp_path: Path, *keys: str, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    save_file({key: torch.zeros(1) for key in keys}, path)
    return path


@pytest.mark.parametrize(
    ("key", "architecture"),
    [
        ("model.diffusion_model.output_blocks.11.0.skip_connection.weight", "sd15"),
        ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias", "sdxl"),
        ("conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias", "sdxl-refiner"),
        ("double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
        ("model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
        ("single_transformer_blocks.0.attn.norm_k.weight", "flux"),
        ("model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight", "sd35"),
        ("joint_blocks.0.context_block.attn.qkv.weight", "sd35"),
    ],
)
def test_marker_keys_name_the_architecture(tmp_path: Path, key: str, architecture: str) -> None:
    assert probe_architecture(checkpoint(tmp_path, key, "some.other.weight")) == architecture


def test_unknown_keys_and_other_formats_are_not_guessed(tmp_path: Path) -> None:
    assert probe_architecture(checkpoint(tmp_path, "lora_unet_down.weight")) is None
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not read")
    assert probe_architecture(pickle) is None


def test_the_header_is_read_whatever_the_extension(tmp_path: Path) -> None:
    # BFL ships Flux as .sft; downloads get renamed .SAFETENSORS.
    for name in ("flux1-dev.sft", "FLUX.SAFETENSORS"):
        path = checkpoint(tmp_path, "double_blocks.0.img_attn.norm.key_norm.scale", name=name)
        assert probe_architecture(path) == "flux"


# What users registered as models and saw fail with errors naming neither file nor cause.
@pytest.mark.parametrize(
    ("tensors", "says"),
    [
        (
            {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8)},
            "is a LoRA, not a checkpoint",
        ),
        ({"transformer.to_q.lora_A.weight": (4, 8)}, "is a LoRA, not a checkpoint"),
        (
            {"scaled_fp8": (0,), "double_blocks.0.img_attn.qkv.scale_weight": (1,)},
            "scaled-fp8 file, which is not supported",
        ),
        (
            {
                "model.diffusion_model.double_blocks.0.img_attn.proj.weight": (8, 1),
                "model.diffusion_model.double_blocks.0.img_attn.proj.weight.absmax": (1,),
                "model.diffusion_model.double_blocks.0.img_attn.proj.weight.quant_state."
                "bitsandbytes__nf4": (1,),
            },
            "is a bitsandbytes NF4/FP4 file (Forge's `bnb-nf4` layout)",
        ),
        (
            {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)},
            "is an inpainting UNet (9 input channels)",
        ),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(
    tmp_path: Path, tensors: dict[str, tuple[int, ...]], says: str
) -> None:
    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, path)
    reason = diagnose(path)
    assert reason is not None
    assert says in reason


def test_truncated_and_foreign_files_are_named_so(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(64, 64)}, path)
    assert diagnose(path) is None  # nothing visibly wrong
    path.write_bytes(path.read_bytes()[:-100])  # an interrupted download
    assert "is truncated: it has" in (diagnose(path) or "")
    pickle = tmp_path / "model.sft"
    pickle.write_bytes(b"PK\x03\x04 a zip, as torch.save writes")
    assert "is not a safetensors file" in (diagnose(pickle) or "")
    assert "does not exist" in (diagnose(tmp_path / "missing.safetensors") or "")


def test_a_scaled_fp8_file_passes_where_the_loader_applies_its_scales(tmp_path: Path) -> None:
    path = tmp_path / "flux1-dev-fp8-scaled.safetensors"
    save_file({"scaled_fp8": torch.zeros(0), "img_in.scale_weight": torch.ones(())}, path)
    assert "not supported for this architecture" in (diagnose(path) or "")
    assert diagnose(path, reads_scaled_fp8=True) is None  # its scales are placed (Flux, SD)


def test_a_gguf_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "flux1-dev-Q8_0.gguf"  # GGUF's magic, version 3, then its tables
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(64))
    said = diagnose(path) or ""
    assert "is a GGUF file, which this service does not read for this architecture" in said
    assert "is a GGUF file that holds no weights" in (diagnose(path, reads_gguf=True) or "")
