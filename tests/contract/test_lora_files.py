"""A LoRA's architecture from its header, in the layouts trainers write; LoRA folders."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contract.lora_files import discover_loras, probe_lora

RANK = 4  # real widths, a tiny rank: the files stay small


def lora_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, path)
    return path


KOHYA_TO_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
DIFFUSERS_TO_K = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"


@pytest.mark.parametrize(
    ("shapes", "architecture"),
    [
        # kohya (A1111's own format), SD1.5: cross-attention projects from CLIP-L's 768
        (
            {
                f"{KOHYA_TO_K}.lora_down.weight": (RANK, 768),
                f"{KOHYA_TO_K}.lora_up.weight": (320, RANK),
            },
            "sd15",
        ),
        # diffusers' own layout, SDXL: CLIP-L and CLIP-G side by side, 2048
        ({f"{DIFFUSERS_TO_K}.lora.down.weight": (RANK, 2048)}, "sdxl"),
        # PEFT, the refiner: CLIP-G alone, 1280
        ({f"{DIFFUSERS_TO_K}.lora_A.weight": (RANK, 1280)}, "sdxl-refiner"),
        # an SDXL LoRA that only adapts the second text encoder
        (
            {
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (
                    RANK,
                    1280,
                )
            },
            "sdxl",
        ),
        # Flux: kohya over BFL's names, and diffusers' names
        ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (RANK, 3072)}, "flux"),
        ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (RANK, 3072)}, "flux"),
        # SD3.5 over MMDiT's names
        ({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (RANK, 1536)}, "sd35"),
        # Chroma: Flux's block names, and the layer Chroma has in place of their modulation
        (
            {
                "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (RANK, 3072),
                "lora_unet_distilled_guidance_layer_in_proj.lora_down.weight": (RANK, 64),
            },
            "chroma",
        ),
        # the demo models' 32-wide cross-attention is no real architecture's: it cannot tell
        ({f"{DIFFUSERS_TO_K}.lora_A.weight": (RANK, 32)}, None),
    ],
)
def test_the_architecture_is_read_from_keys_and_widths(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], architecture: str | None
) -> None:
    assert probe_lora(lora_file(tmp_path / "l.safetensors", shapes)) == architecture


def test_a_folder_lists_the_loras_whose_architecture_and_name_it_can_tell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sd15 = {
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (
            RANK,
            768,
        )
    }
    lora_file(tmp_path / "add-detail.safetensors", sd15)
    lora_file(
        tmp_path / "flux-realism.safetensors",
        {"lora_unet_single_blocks_0_linear1.lora_down.weight": (RANK, 3072)},
    )
    lora_file(tmp_path / "mystery.safetensors", {"something.lora_down.weight": (RANK, 5)})
    lora_file(tmp_path / "has spaces.safetensors", sd15)
    (tmp_path / "notes.txt").write_text("not a LoRA")
    with caplog.at_level(logging.WARNING, logger="imagegen.registry"):
        found = discover_loras(tmp_path)
    assert {n: e["architecture"] for n, e in found.items()} == {
        "add-detail": "sd15",
        "flux-realism": "flux",
    }
    assert found["add-detail"]["file"] == tmp_path / "add-detail.safetensors"
    said = caplog.text
    assert "mystery.safetensors left out: its keys do not show its architecture" in said
    assert "has spaces.safetensors left out: its name must match" in said
