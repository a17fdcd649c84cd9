"""Full-size SD1.5 and SDXL with random weights, from the real architectures' configs.

Their output is noise, but their compute and memory are the real models', which is what a GPU
measurement needs when no checkpoint can be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from workers.demo_models import _clip_tokenizer


def _vae(scaling: float) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=scaling,
    )


def _clip(hidden: int, layers: int, heads: int, projection: bool = False) -> torch.nn.Module:
    tokenizer = _clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if hidden == 768 else "gelu",
        projection_dim=1280 if projection else 768,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_sd15(out: Path) -> None:
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        pipe = StableDiffusionPipeline(
            vae=_vae(0.18215),
            text_encoder=_clip(768, 12, 12),
            tokenizer=_clip_tokenizer(),
            unet=unet,
            scheduler=_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.to(torch.float16).save_pretrained(out)


def build_sdxl(out: Path) -> None:
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        unet = UNet2DConditionModel(
            sample_size=128,
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            use_linear_projection=True,
        )
        pipe = StableDiffusionXLPipeline(
            vae=_vae(0.13025),
            text_encoder=_clip(768, 12, 12),
            text_encoder_2=_clip(1280, 32, 20, projection=True),
            tokenizer=_clip_tokenizer(),
            tokenizer_2=_clip_tokenizer(),
            unet=unet,
            scheduler=_scheduler(),
        )
    pipe.to(torch.float16).save_pretrained(out)
