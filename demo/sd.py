"""The demo SD1.5, SDXL and SDXL refiner: the real UNet family's structure (cross-attention
widths, SDXL's text-time embedding and the refiner's aesthetic score), shrunk."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from demo.parts import clip_config, clip_tokenizer, sd_scheduler, sd_unet, tiny_vae


def build_sd15(out: Path) -> None:
    torch.manual_seed(15)
    tokenizer = clip_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(4, 0.18215),
        text_encoder=CLIPTextModel(clip_config(tokenizer, 32)),
        tokenizer=tokenizer,
        unet=sd_unet(32),
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)


def _sdxl_shared(seed: int) -> tuple[AutoencoderKL, CLIPTextModelWithProjection, CLIPTokenizer]:
    """The VAE and second text encoder that SDXL base and refiner share (as the real ones do)."""
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    vae = tiny_vae(4, 0.13025)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(tokenizer, 32, projection=32))
    return vae, text_encoder_2, tokenizer


def build_sdxl(out: Path) -> None:
    vae, text_encoder_2, tokenizer = _sdxl_shared(1024)
    torch.manual_seed(1)
    # cross_attention_dim = hidden(te1) + hidden(te2); add embedding = pooled(te2) + 6 time ids x 8.
    unet = sd_unet(
        64,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
        transformer_layers_per_block=(1, 1),
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(clip_config(tokenizer, 32)),
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=sd_scheduler(),
    )
    pipe.save_pretrained(out)


def build_sdxl_refiner(out: Path) -> None:
    vae, text_encoder_2, tokenizer = _sdxl_shared(1024)
    torch.manual_seed(2)
    # The refiner conditions on text_encoder_2 only and on an aesthetic score (5 time ids).
    unet = sd_unet(
        32,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 5 * 8,
        transformer_layers_per_block=(1, 1),
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=sd_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipe.save_pretrained(out)


BUILDERS = {
    "demo-sd15": build_sd15,
    "demo-sdxl": build_sdxl,
    "demo-sdxl-refiner": build_sdxl_refiner,
}
